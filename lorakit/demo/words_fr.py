"""Word lists and sentence templates of the French demo scenario (see `lorakit.demo.corpus_fr`).

Clinical dictation in French (drug INNs in their French spelling, doses, routes, procedures, anatomy,
diagnoses) is the domain; everyday French sentences are the general speech the model must not forget.
Templates use `{slot}` fields; a digit suffix (`{drug2}`) asks for another, distinct filler of the
same slot. The lists carry their own articles where French needs agreement ("la gare", "le rein
gauche"), and templates avoid the contractions (à le, de le) that a slot would break; the one
elision a slot can need ("de amoxicilline" -> "d'amoxicilline") is applied by the sentence builder.
Numbers are digits with a decimal comma, as French clinical notes write them.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------- clinical
DRUGS = [
    "paracétamol", "ibuprofène", "amoxicilline", "amoxicilline-acide clavulanique", "métoprolol", "bisoprolol",
    "ramipril", "périndopril", "amlodipine", "furosémide", "spironolactone", "apixaban", "rivaroxaban",
    "warfarine", "clopidogrel", "énoxaparine", "héparine", "metformine", "gliclazide", "sitagliptine",
    "empagliflozine", "insuline glargine", "lévothyroxine", "prednisone", "prednisolone", "méthylprednisolone",
    "dexaméthasone", "hydrocortisone", "salbutamol", "tiotropium", "budésonide", "oméprazole", "ésoméprazole",
    "pantoprazole", "ondansétron", "métoclopramide", "lactulose", "macrogol", "tramadol", "morphine",
    "oxycodone", "fentanyl", "néfopam", "kétoprofène", "gabapentine", "prégabaline", "sertraline",
    "escitalopram", "venlafaxine", "mirtazapine", "quétiapine", "halopéridol", "lorazépam", "alprazolam",
    "oxazépam", "zolpidem", "lévétiracétam", "valproate de sodium", "lamotrigine", "ceftriaxone", "céfazoline",
    "céfotaxime", "azithromycine", "doxycycline", "ciprofloxacine", "lévofloxacine", "vancomycine",
    "pipéracilline-tazobactam", "méropénème", "métronidazole", "nitrofurantoïne", "fosfomycine",
    "cotrimoxazole", "clindamycine", "fluconazole", "aciclovir", "valaciclovir", "allopurinol", "colchicine",
    "tamsulosine", "alendronate", "méthotrexate", "hydroxychloroquine", "amiodarone", "digoxine", "trinitrine",
    "atorvastatine", "rosuvastatine", "ézétimibe", "chlorure de potassium", "sulfate de magnésium",
    "acide tranexamique", "naloxone", "buprénorphine", "méthadone", "adrénaline", "noradrénaline", "propofol",
    "midazolam", "kétamine", "rocuronium", "sugammadex", "dabigatran", "ticagrélor", "sémaglutide",
]

DOSE_AMOUNTS = ["0,5", "1", "2", "2,5", "4", "5", "10", "20", "25", "40", "50", "75", "80", "100", "125", "150",
                "200", "250", "300", "400", "500", "750", "1000"]
DOSE_UNITS = ["milligrammes"] * 6 + ["microgrammes", "unités", "millilitres", "grammes"]

FREQUENCIES = [
    "une fois par jour", "deux fois par jour", "trois fois par jour", "toutes les 6 heures",
    "toutes les 8 heures", "toutes les 12 heures", "le soir au coucher", "le matin à jeun", "si douleur",
    "si nausées", "un jour sur deux", "une fois par semaine", "pendant les repas",
]

ROUTES = [
    "par voie orale", "par voie intraveineuse", "en intramusculaire", "en sous-cutané", "par voie sublinguale",
    "en application locale", "en nébulisation", "par voie rectale", "par la sonde gastrique",
    "en perfusion continue", "en patch", "par voie nasale",
]

PROCEDURES = [
    "cholécystectomie par cœlioscopie", "appendicectomie", "coloscopie", "fibroscopie œso-gastro-duodénale",
    "fibroscopie bronchique", "ponction pleurale", "ponction d'ascite", "ponction lombaire", "coronarographie",
    "angioplastie coronaire", "pontage aorto-coronarien", "échographie transœsophagienne",
    "échocardiographie transthoracique", "électrocardiogramme", "cardioversion électrique", "pose de pacemaker",
    "prothèse totale de genou", "prothèse totale de hanche", "ostéosynthèse", "libération du canal carpien",
    "réparation de la coiffe des rotateurs", "méniscectomie arthroscopique", "laminectomie", "arthrodèse rachidienne",
    "craniotomie", "trachéotomie", "thyroïdectomie totale", "mastectomie", "tumorectomie", "hystérectomie",
    "césarienne", "cystoscopie", "résection transurétrale de prostate", "néphrectomie", "hémodialyse",
    "pose de voie veineuse centrale", "intubation orotrachéale", "drainage thoracique", "biopsie cutanée",
    "biopsie ostéomédullaire", "cytoponction", "scanner abdominal", "IRM cérébrale", "radiographie thoracique",
    "échographie rénale", "écho-doppler des troncs supra-aortiques", "scintigraphie myocardique",
    "épreuves fonctionnelles respiratoires", "cure de hernie inguinale", "résection du grêle",
    "cholangiopancréatographie rétrograde", "biopsie hépatique", "amputation transtibiale", "greffe de peau",
    "chirurgie de la cataracte", "amygdalectomie", "électroencéphalogramme", "cyphoplastie",
]

ANATOMY = [
    "le lobe inférieur gauche", "le lobe supérieur droit", "l'hypocondre droit", "la fosse iliaque gauche",
    "l'épigastre", "le ventricule gauche", "la valve mitrale", "la valve aortique", "la vésicule biliaire",
    "le cholédoque", "la tête du pancréas", "le duodénum", "le côlon sigmoïde", "le rein gauche",
    "l'uretère droit", "la vessie", "le rachis cervical", "le rachis lombaire", "le sacrum", "le fémur gauche",
    "le tibia droit", "la clavicule", "la rotule", "le ménisque interne", "la carotide droite", "la thyroïde",
    "la trachée", "l'œsophage", "le lobe frontal", "le lobe temporal", "le cervelet",
]

CONDITIONS = [
    "fibrillation atriale", "insuffisance cardiaque", "hypertension artérielle", "dyslipidémie",
    "diabète de type 2", "insuffisance rénale chronique", "insuffisance rénale aiguë", "pneumopathie communautaire",
    "bronchopneumopathie chronique obstructive", "crise d'asthme", "embolie pulmonaire",
    "thrombose veineuse profonde", "érysipèle", "infection urinaire", "pyélonéphrite", "sepsis",
    "cholécystite aiguë", "pancréatite aiguë", "diverticulite", "reflux gastro-œsophagien", "hypothyroïdie",
    "hyperkaliémie", "hyponatrémie", "anémie ferriprive", "thrombopénie", "arthrose", "polyarthrite rhumatoïde",
    "goutte", "ostéoporose", "migraine", "épilepsie", "accident vasculaire cérébral ischémique",
    "maladie de Parkinson", "démence vasculaire", "épisode dépressif majeur", "syndrome d'apnées du sommeil",
]

FINDINGS = ["un nodule", "un épanchement", "une masse hypodense", "une collection", "un épaississement pariétal",
            "une fracture non déplacée", "des calcifications", "une sténose", "un kyste simple"]
EXAM_FINDINGS = [
    "abdomen souple et indolore", "auscultation pulmonaire claire", "souffle systolique au foyer aortique",
    "œdèmes des membres inférieurs", "pas de déficit neurologique", "crépitants aux deux bases",
    "mollets souples et indolores", "pupilles égales et réactives", "défense de la fosse iliaque droite",
]
REACTIONS = ["une éruption cutanée", "un œdème de Quincke", "des nausées", "un prurit", "un choc anaphylactique"]
SPECIALTIES = ["cardiologique", "néphrologique", "chirurgical", "neurologique", "gériatrique", "pneumologique",
               "infectiologique", "gastro-entérologique"]
SPECIALTY_NOUNS = ["cardiologie", "néphrologie", "chirurgie", "neurologie", "gériatrie", "pneumologie",
                   "infectiologie", "endocrinologie"]
ANESTHESIA = ["anesthésie générale", "rachianesthésie", "anesthésie locale", "sédation consciente",
              "bloc interscalénique", "anesthésie péridurale"]
COMPLICATIONS = ["sans complication", "avec un saignement minime", "compliqué d'un hématome",
                 "sans incident notable", "avec une conversion en laparotomie"]
LABS = [  # (name, low, high, decimals)
    ("créatinine", 50, 400, 0), ("potassium", 2.8, 6.5, 1), ("sodium", 120, 150, 0), ("hémoglobine", 6.0, 16.0, 1),
    ("CRP", 1, 300, 0), ("troponine", 5, 900, 0), ("glycémie", 3.0, 25.0, 1), ("INR", 0.9, 4.5, 1),
    ("lactates", 0.5, 8.0, 1),
]
PATIENTS = ["Patient", "Patiente", "Monsieur", "Madame"]
WHEN = ["demain matin", "la semaine prochaine", "lundi", "en ambulatoire", "dans un mois", "après-demain"]

CLINICAL_TEMPLATES = [
    "{patient} de {age} ans, hospitalisation pour {condition}.",
    "Débuter {drug} {dose} {route} {freq}.",
    "Arrêt de {drug} et relais par {drug2} {dose} {freq}.",
    "Reçu {dose} de {drug} {route} aux urgences.",
    "Antécédents : {condition}, {condition2} et {procedure} en {year}.",
    "Programmé pour {procedure} {when}.",
    "Geste réalisé : {procedure} sous {anesthesia}, {complication}.",
    "Le scanner retrouve {finding} de {size} centimètres dans {anatomy}.",
    "Tension artérielle {sys} sur {dia}, fréquence cardiaque {hr}, saturation {sat} pour cent.",
    "Biologie : {lab_value}, {lab_value2}.",
    "Examen clinique : {exam_finding}.",
    "Allergie connue : {drug}, avec {reaction}.",
    "Avis {specialty} demandé pour {condition}.",
    "Poursuite de {drug} {dose} {freq} pendant {n_days} jours.",
    "Suites simples après {procedure}, sortie prévue {when}.",
    "Douleur dans {anatomy}, cotée à {pain} sur 10.",
    "Contrôle de {lab} dans {n_days} jours.",
    "Traitement habituel : {drug} {dose} {freq} et {drug2} {dose2} {freq2}.",
    "Indication de {procedure} posée en réunion de concertation.",
    "Introduction de {drug} {route} pour {condition}.",
    "Pertes sanguines estimées à {ebl} millilitres lors de {procedure}.",
    "Échographie : {finding} dans {anatomy}, sans autre anomalie.",
    "Surveillance de {lab} sous {drug} {freq}.",
    "Ordonnance de sortie : {drug} {dose} {freq}, à revoir en consultation de {specialty_noun}.",
    "{patient} de {age} ans suivi pour {condition}, adressé pour {procedure}.",
]

# ---------------------------------------------------------------------------------------- everyday
NAMES = ["Camille", "Julien", "Sophie", "Thomas", "Léa", "Nicolas", "Manon", "Chloé", "Louis", "Mathieu",
         "Claire", "Pierre", "Lucie", "Bastien", "Margaux", "Vincent"]
RELATIONS = ["mon frère", "ma sœur", "ma mère", "mon père", "ma tante", "mon oncle", "mon cousin", "ma cousine",
             "mon voisin", "ma voisine", "ma grand-mère", "mon grand-père"]
PLACES = ["la boulangerie", "la gare", "la bibliothèque", "la poste", "la piscine", "la pharmacie", "la mairie",
          "la librairie", "la plage", "la fromagerie", "la banque", "la patinoire"]  # all feminine: "à la", "de la"
CITIES = ["Lyon", "Marseille", "Bordeaux", "Lille", "Nantes", "Toulouse", "Strasbourg", "Rennes", "Nice",
          "Genève", "Bruxelles", "Montréal"]
DAYS = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche", "demain", "ce soir",
        "samedi prochain", "ce week-end"]
DAY_NAMES = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
TIMES = ["8 heures", "midi", "minuit", "9 heures et demie", "18 heures", "7 heures du matin", "15 heures"]
FOODS = ["du pain", "des pommes", "du fromage", "du café", "des œufs", "du riz", "des tomates", "du chocolat",
         "des pâtes", "de la soupe", "du poulet", "du thé", "des fraises"]
ACTIVITIES = ["jardiner", "peindre la cuisine", "jouer aux échecs", "faire des gâteaux", "randonner en montagne",
              "faire du vélo", "lire au soleil", "ranger le grenier"]
OBJECTS = ["le parapluie", "la lampe", "le vélo", "la bouilloire", "la veste", "l'appareil photo",
           "le sac à dos", "la montre", "le téléphone", "la valise"]
ROOMS = ["la cuisine", "le salon", "la cave", "le couloir", "la chambre", "le bureau", "le grenier", "le garage"]
ANIMALS = ["un chiot", "un chaton", "un perroquet", "un lapin", "un poisson rouge", "un hamster", "une tortue",
           "un cheval"]
WEATHER = ["beau", "froid", "chaud", "gris", "doux", "frais"]
TRANSPORT = ["train", "bus", "car", "bateau"]  # all masculine: "le train"
CHORES = ["fermer la porte à clé", "arroser les plantes", "nourrir le chat", "sortir les poubelles",
          "rendre les livres", "payer le loyer"]

GENERAL_TEMPLATES = [
    "{name} retrouve {name2} devant {place} {day}.",
    "Peux-tu acheter {food} et {food2} en rentrant ?",
    "Le {transport} pour {city} part à {time} du quai {n_small}.",
    "Nous avons passé le week-end à {activity} avec {relation} près de {city}.",
    "{relation} vient d'adopter {animal} qui s'appelle {name}.",
    "N'oublie pas de {chore} avant {time}.",
    "La météo annonce qu'il fera {weather} à {city} {day}.",
    "{name} a acheté {object} pour {price} euros.",
    "Je crois que {place} ferme à {time} {day}.",
    "As-tu vu {object} ? J'ai cherché partout dans {room}.",
    "{name} et {name2} partent à {city} {day}.",
    "Il y avait environ {n_big} personnes à {place} ce matin.",
    "S'il fait {weather}, {name} veut passer {day_plain} à {activity}.",
    "La recette demande {n_small} tasses de farine et {food}.",
    "{name} fait du sport tous les {day_plain}s depuis {n_small} ans.",
    "Rendez-vous devant {place} à {time} {day}.",
    "{relation} a oublié {object} dans le {transport} pour {city}.",
    "Les enfants veulent encore {food} ce soir, mais {name} a préparé {food2}.",
    "J'appellerai {name} {day} pour prendre des nouvelles de {name2}.",
    "Le {transport} de {city} avait {n_small} heures de retard à cause du mauvais temps.",
    "Tu te rends compte, {object} a coûté {price} euros !",
    "Il n'y avait plus rien à manger, alors {name} a fait un saut à {place}.",
    "{name} regarde la télévision tous les soirs dans {room}.",
    "Il a fait {weather} toute la semaine à {city}, alors nous sommes restés à la maison.",
    "Tu préfères {food} ou {food2} pour le petit déjeuner ?",
    "{relation} habite à {n_small} rues de {place}.",
    "On pourrait {activity} {day} si tu es libre.",
    "{name} cherche {object} partout depuis {day_plain}.",
]

# Slot name -> word list, for the templates above ({drug}, {drug2}, ... all draw from "drug").
WORD_SLOTS = {
    "drug": DRUGS, "procedure": PROCEDURES, "route": ROUTES, "freq": FREQUENCIES, "anatomy": ANATOMY,
    "condition": CONDITIONS, "finding": FINDINGS, "exam_finding": EXAM_FINDINGS, "reaction": REACTIONS,
    "specialty": SPECIALTIES, "specialty_noun": SPECIALTY_NOUNS, "anesthesia": ANESTHESIA,
    "complication": COMPLICATIONS, "patient": PATIENTS, "when": WHEN,
    "name": NAMES, "relation": RELATIONS, "place": PLACES, "city": CITIES, "day": DAYS, "day_plain": DAY_NAMES,
    "time": TIMES, "food": FOODS, "activity": ACTIVITIES, "object": OBJECTS, "room": ROOMS, "animal": ANIMALS,
    "weather": WEATHER, "transport": TRANSPORT, "chore": CHORES,
}
# Slot name -> inclusive integer range.
NUMBER_RANGES = {
    "age": (18, 96), "n_days": (2, 14), "n_small": (2, 9), "sys": (88, 188), "dia": (46, 108), "hr": (44, 136),
    "sat": (84, 99), "n_big": (20, 400), "price": (5, 900), "pain": (1, 9), "year": (1995, 2024),
    "ebl": (1, 18),  # x 50 millilitres
}
