"""Word lists and sentence templates for the synthetic demo corpus (see `lorakit.corpus`).

Clinical dictation (drugs, doses, routes, procedures, anatomy, diagnoses) is the domain; everyday
sentences are the general English the model must not forget. Templates use `{slot}` fields; a digit
suffix (`{drug2}`) asks for another, distinct filler of the same slot. Numbers are written as digits
in the text: WER is scored after Whisper's English normalizer, which standardizes them anyway.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------- clinical
DRUGS = [
    "metoprolol", "lisinopril", "amoxicillin-clavulanate", "atorvastatin", "levetiracetam",
    "amlodipine", "losartan", "hydrochlorothiazide", "furosemide", "spironolactone", "carvedilol",
    "diltiazem", "apixaban", "rivaroxaban", "warfarin", "clopidogrel", "enoxaparin", "heparin",
    "metformin", "glipizide", "sitagliptin", "empagliflozin", "dapagliflozin", "insulin glargine",
    "insulin lispro", "levothyroxine", "prednisone", "methylprednisolone", "dexamethasone",
    "hydrocortisone", "albuterol", "ipratropium", "tiotropium", "budesonide", "fluticasone",
    "montelukast", "omeprazole", "pantoprazole", "famotidine", "ondansetron", "metoclopramide",
    "docusate", "senna", "polyethylene glycol", "lactulose", "acetaminophen", "ibuprofen",
    "naproxen", "ketorolac", "oxycodone", "hydromorphone", "morphine", "fentanyl", "tramadol",
    "gabapentin", "pregabalin", "duloxetine", "sertraline", "escitalopram", "fluoxetine",
    "citalopram", "bupropion", "venlafaxine", "mirtazapine", "trazodone", "quetiapine",
    "olanzapine", "risperidone", "aripiprazole", "haloperidol", "lorazepam", "alprazolam",
    "clonazepam", "diazepam", "zolpidem", "lamotrigine", "valproate", "phenytoin", "carbamazepine",
    "topiramate", "donepezil", "memantine", "ceftriaxone", "cefazolin", "cephalexin",
    "azithromycin", "doxycycline", "ciprofloxacin", "levofloxacin", "vancomycin",
    "piperacillin-tazobactam", "meropenem", "metronidazole", "nitrofurantoin",
    "trimethoprim-sulfamethoxazole", "clindamycin", "fluconazole", "acyclovir", "valacyclovir",
    "oseltamivir", "allopurinol", "colchicine", "tamsulosin", "finasteride", "oxybutynin",
    "alendronate", "methotrexate", "hydroxychloroquine", "adalimumab", "tacrolimus",
    "mycophenolate", "cyclosporine", "amiodarone", "digoxin", "nitroglycerin",
    "isosorbide mononitrate", "hydralazine", "labetalol", "clonidine", "propranolol", "atenolol",
    "rosuvastatin", "simvastatin", "ezetimibe", "potassium chloride", "magnesium sulfate",
    "ferrous sulfate", "cyanocobalamin", "thiamine", "sumatriptan", "cyclobenzaprine",
    "baclofen", "tizanidine", "naloxone", "buprenorphine", "methadone", "epinephrine",
    "norepinephrine", "vasopressin", "propofol", "midazolam", "ketamine", "rocuronium",
    "succinylcholine", "sugammadex", "dexmedetomidine", "tranexamic acid", "alteplase",
    "sacubitril-valsartan", "semaglutide", "liraglutide", "tirzepatide", "ticagrelor",
    "dabigatran", "edoxaban", "bisoprolol", "nebivolol", "olmesartan", "chlorthalidone",
    "bumetanide", "torsemide", "eplerenone", "ranolazine", "ivabradine", "linezolid",
    "daptomycin", "cefepime", "ertapenem", "gentamicin", "posaconazole", "voriconazole",
    "rifaximin", "mesalamine", "infliximab", "ustekinumab", "dupilumab", "denosumab",
]

DOSE_AMOUNTS = [
    "0.5", "1", "2", "2.5", "4", "5", "6.25", "10", "12.5", "15", "20", "25", "30", "40", "50",
    "60", "75", "80", "100", "120", "125", "150", "200", "250", "300", "325", "400", "500", "600",
    "650", "750", "800", "875", "1000",
]
DOSE_UNITS = ["milligrams"] * 6 + ["micrograms", "units", "milliliters", "grams", "milligrams per kilogram"]

FREQUENCIES = [
    "once daily", "twice daily", "three times daily", "four times daily", "every 4 hours",
    "every 6 hours", "every 8 hours", "every 12 hours", "at bedtime", "every morning",
    "as needed for pain", "as needed for nausea", "every other day", "once weekly",
    "before meals", "with meals", "every 4 to 6 hours as needed", "once a day in the evening",
]

ROUTES = [
    "by mouth", "orally", "intravenously", "intramuscularly", "subcutaneously", "sublingually",
    "topically", "via nebulizer", "per rectum", "through the feeding tube", "by intravenous push",
    "as a continuous infusion", "transdermally", "intranasally",
]

PROCEDURES = [
    "laparoscopic cholecystectomy", "appendectomy", "colonoscopy", "upper endoscopy",
    "esophagogastroduodenoscopy", "bronchoscopy", "thoracentesis", "paracentesis",
    "lumbar puncture", "cardiac catheterization", "percutaneous coronary intervention",
    "coronary artery bypass grafting", "transesophageal echocardiogram", "transthoracic echocardiogram",
    "electrocardiogram", "electrical cardioversion", "pacemaker placement", "total knee arthroplasty",
    "total hip arthroplasty", "open reduction and internal fixation", "carpal tunnel release",
    "rotator cuff repair", "arthroscopic meniscectomy", "lumbar laminectomy", "spinal fusion",
    "craniotomy", "tracheostomy", "thyroidectomy", "mastectomy", "lumpectomy", "hysterectomy",
    "cesarean section", "cystoscopy", "transurethral resection of the prostate", "nephrectomy",
    "hemodialysis", "central line placement", "arterial line placement", "endotracheal intubation",
    "chest tube insertion", "incision and drainage", "wound debridement", "punch biopsy",
    "bone marrow biopsy", "fine needle aspiration", "computed tomography of the abdomen",
    "magnetic resonance imaging of the brain", "chest radiograph", "renal ultrasound",
    "carotid duplex", "nuclear stress test", "pulmonary function testing", "inguinal hernia repair",
    "small bowel resection", "endoscopic retrograde cholangiopancreatography", "liver biopsy",
    "below knee amputation", "split thickness skin graft", "cataract extraction", "tonsillectomy",
    "electroencephalogram", "kyphoplasty", "ablation of the cavotricuspid isthmus",
]

ANATOMY = [
    "left lower lobe", "right upper lobe", "right upper quadrant", "left lower quadrant",
    "epigastrium", "sternum", "left ventricle", "mitral valve", "aortic valve", "tricuspid valve",
    "common bile duct", "gallbladder", "pancreatic head", "duodenum", "sigmoid colon", "cecum",
    "left kidney", "right ureter", "urinary bladder", "prostate", "cervical spine", "lumbar spine",
    "sacrum", "left femur", "right tibia", "distal fibula", "proximal humerus", "distal radius",
    "ulna", "scaphoid", "clavicle", "scapula", "patella", "medial meniscus",
    "anterior cruciate ligament", "rotator cuff", "right carotid artery", "common femoral artery",
    "internal jugular vein", "thyroid gland", "trachea", "esophagus", "pleural space",
    "pericardium", "peritoneum", "frontal lobe", "temporal lobe", "cerebellum", "basal ganglia",
    "retina", "tympanic membrane", "right hemithorax", "left axilla", "popliteal fossa",
]

CONDITIONS = [
    "atrial fibrillation", "congestive heart failure", "hypertension", "hyperlipidemia",
    "type 2 diabetes mellitus", "chronic kidney disease", "acute kidney injury",
    "community acquired pneumonia", "chronic obstructive pulmonary disease", "asthma exacerbation",
    "pulmonary embolism", "deep vein thrombosis", "cellulitis", "urinary tract infection",
    "pyelonephritis", "sepsis", "acute cholecystitis", "acute pancreatitis", "diverticulitis",
    "gastroesophageal reflux disease", "hypothyroidism", "hyperkalemia", "hyponatremia",
    "hypokalemia", "iron deficiency anemia", "thrombocytopenia", "osteoarthritis",
    "rheumatoid arthritis", "gout", "osteoporosis", "migraine", "epilepsy", "ischemic stroke",
    "transient ischemic attack", "Parkinson disease", "vascular dementia",
    "major depressive disorder", "generalized anxiety disorder", "schizophrenia",
    "bipolar disorder", "alcohol withdrawal", "opioid use disorder", "obstructive sleep apnea",
    "benign prostatic hyperplasia", "nephrolithiasis", "appendicitis", "small bowel obstruction",
    "non ST elevation myocardial infarction", "unstable angina", "aortic stenosis", "endocarditis",
    "bacterial meningitis", "herpes zoster", "influenza", "anaphylaxis", "syncope", "delirium",
    "peripheral neuropathy", "hepatic cirrhosis", "ulcerative colitis", "Crohn disease",
    "psoriasis", "sarcoidosis", "myasthenia gravis", "hypercalcemia",
]

FINDINGS = [
    "shortness of breath", "chest pain", "palpitations", "dizziness", "nausea and vomiting",
    "abdominal pain", "fever and chills", "a productive cough", "lower extremity edema", "dysuria",
    "hematuria", "melena", "hematemesis", "a severe headache", "blurred vision",
    "weakness on the left side", "numbness in both feet", "joint swelling", "a pruritic rash",
    "fatigue", "unintentional weight loss", "diarrhea", "constipation", "acute confusion",
    "wheezing", "low back pain", "neck stiffness", "hemoptysis", "orthopnea", "night sweats",
]

EXAM_FINDINGS = [
    "mild erythema and warmth", "a 2 centimeter fluctuant abscess", "crackles at the base",
    "a grade 2 systolic murmur", "no focal deficits", "trace pitting edema",
    "decreased breath sounds", "tenderness without guarding", "a well healed surgical scar",
    "a small effusion", "full range of motion", "diffuse wheezing", "jugular venous distension",
    "mild ecchymosis", "point tenderness",
]

REACTIONS = [
    "hives", "angioedema", "a diffuse rash", "severe nausea", "bradycardia", "hypotension",
    "lightheadedness", "a persistent dry cough", "muscle aches", "diarrhea", "hyperkalemia",
    "QT prolongation", "elevated liver enzymes", "oral thrush",
]

SPECIALTIES = [
    "cardiology", "nephrology", "gastroenterology", "pulmonology", "neurology",
    "orthopedic surgery", "general surgery", "infectious disease", "endocrinology", "urology",
    "interventional radiology", "psychiatry", "hematology oncology", "palliative care",
    "physical therapy", "dermatology", "rheumatology",
]

ANESTHESIA = [
    "general anesthesia", "moderate sedation", "spinal anesthesia", "local anesthesia",
    "monitored anesthesia care", "a regional nerve block",
]

COMPLICATIONS = [
    "minor bleeding", "a small pneumothorax", "transient hypotension",
    "a superficial wound infection", "postoperative ileus", "urinary retention", "atelectasis",
]

LABS = [  # (name, low, high, decimals)
    ("potassium", 2.8, 6.4, 1), ("sodium", 122, 149, 0), ("creatinine", 0.6, 4.8, 1),
    ("hemoglobin", 6.2, 15.8, 1), ("white count", 2.1, 24.0, 1), ("platelet count", 38, 460, 0),
    ("INR", 0.9, 4.5, 1), ("glucose", 48, 420, 0), ("lactate", 0.8, 6.5, 1),
    ("troponin", 0.01, 2.4, 2), ("hemoglobin A1c", 5.4, 12.9, 1), ("TSH", 0.1, 9.8, 1),
    ("magnesium", 1.1, 2.9, 1), ("bicarbonate", 14, 31, 0), ("albumin", 1.9, 4.6, 1),
]

PATIENTS = ["man", "woman", "male", "female", "gentleman", "lady"]

CLINICAL_TEMPLATES = [
    "{patient} presents with {finding} for the past {n_days} days.",
    "Start {drug} {dose} {route} {freq}.",
    "Continue {drug} {dose} {freq} and recheck the {lab} in {n_days} days.",
    "Discontinue {drug} because of {reaction}.",
    "The patient was given {drug} {dose} {route} in the emergency department.",
    "{patient} with a history of {condition} and {condition2} is admitted for {condition3}.",
    "Status post {procedure}, postoperative day {n_small}, tolerating a regular diet.",
    "Plan for {procedure} tomorrow morning, so hold {drug} after midnight.",
    "Imaging shows a {size} centimeter lesion in the {anatomy}.",
    "There is tenderness to palpation over the {anatomy} and the {anatomy2}.",
    "Increase {drug} from {dose} to {dose2} {freq}.",
    "The {lab_value}, so we will give {drug} {dose} {route}.",
    "Allergies include {drug}, which caused {reaction}.",
    "Home medications are {drug} {dose} {freq} and {drug2} {dose2} {freq2}.",
    "Assessment is {condition}, likely secondary to {condition2}.",
    "Please consult {specialty} regarding {procedure}.",
    "The {procedure} was performed under {anesthesia} without complications.",
    "Estimated blood loss was {ebl} milliliters during the {procedure}.",
    "Findings are consistent with {condition} involving the {anatomy}.",
    "Recommend {drug} {dose} {route} {freq} for {n_days} days.",
    "Blood pressure is {sys} over {dia}, heart rate {hr}, saturating {sat} percent on room air.",
    "Taper {drug} by {dose} every {n_small} days.",
    "The patient reports {finding} since starting {drug}.",
    "Give {drug} {dose} {route} now, then {dose2} {freq}.",
    "Follow up in the {specialty} clinic {n_small} weeks after the {procedure}.",
    "Exam of the {anatomy} reveals {exam_finding}.",
    "Addendum: the {procedure} was complicated by {complication}.",
    "The {lab_value} this morning, down from yesterday.",
    "We will switch {drug} to {drug2} given concern for {reaction}.",
    "{patient} on {drug} for {condition} now presents with {finding}.",
    "Pain is controlled with {drug} {dose} {route} {freq}.",
    "Prior surgical history includes {procedure} and {procedure2}.",
    "Differential diagnosis includes {condition}, {condition2}, and {condition3}.",
    "Hold {drug} if the systolic blood pressure is below {sys_low}.",
    "No acute findings in the {anatomy}; the {anatomy2} is unremarkable.",
    "{drug} level was subtherapeutic, so the dose was increased to {dose}.",
    "Discharge on {drug} {dose} {freq} and {drug2} {dose2} {freq2} with follow up in {specialty}.",
    "Wound over the {anatomy} shows {exam_finding} after the {procedure}.",
    "Continue {drug} for {condition} and add {drug2} {dose} {route}.",
    "Dictation for {patient} seen today for {condition} after {procedure}.",
    # Plain clinical English: most of a real dictation is ordinary words around a few terms.
    "The patient is resting comfortably on day {n_small} and denies {finding} this morning.",
    "{he} tolerated the {procedure} well and went to recovery in stable condition.",
    "We will keep an eye on the {lab} and repeat the blood work in {n_days} days.",
    "{he} was told to call {specialty} if the {finding} gets worse.",
    "We talked about the risks of the {procedure} with the patient's {family}, who agrees with the plan.",
    "The patient lives at home with {his} {family} and walks {n_small} blocks without help.",
    "Vital signs are stable, and {he} has had no fever since {day_plain} at {clock}.",
    "Family history is notable for {condition} in {his} {family}.",
    "Pain in the {anatomy} is {n_small} out of 10 today and better with rest.",
    "We are still waiting on the {lab} result from {day_plain} before {he} can go home.",
    "{he} reports {finding} that started {n_days} days ago and is worse at night.",
    "I spent {minutes} minutes with the patient, more than half of it in counseling.",
    "Come back to clinic in {n_small} weeks, or sooner if the {finding} comes back.",
    "The incision over the {anatomy} is clean and dry {n_days} days after the {procedure}.",
    "Physical therapy will see {him} {when} to work on walking after the {procedure}.",
    "{he} was seen at the bedside at {clock} with {his} {family} in the room.",
    "The patient was sent to {specialty} for a second opinion on the {condition}.",
    "{he} stopped taking {his} medicines {n_days} days ago because of {reaction}.",
    "The patient feels much better after {n_days} days of {drug} and would like to go home {when}.",
    "Overall {he} is doing well {n_days} days out and the {finding} has nearly gone away.",
    "The nurse called at {clock} to say the patient had {finding} overnight.",
    "{he} has not eaten much since {day_plain} and has lost {n_small} pounds.",
]
HE = ["he", "she"]
HIS = {"he": "his", "she": "her"}
HIM = {"he": "him", "she": "her"}
FAMILY = ["wife", "husband", "daughter", "son", "mother", "father", "sister", "brother", "partner"]
WHEN = ["tomorrow", "this afternoon", "tonight", "by the weekend", "on Monday"]

# ----------------------------------------------------------------------------------------- general
NAMES = [
    "Emma", "James", "Olivia", "David", "Maria", "Daniel", "Laura", "Thomas", "Anna", "Peter",
    "Rachel", "Robert", "Susan", "Kevin", "Linda", "George", "Helen", "Paul", "Grace", "Mark",
    "Julia", "Henry", "Nancy", "Oscar", "Ruth", "Frank", "Alice", "Victor", "Diana", "Martin",
    "Lucy", "Adam", "Karen", "Simon", "Nina", "Edward", "Rosa", "Walter", "Jessica", "Patrick",
]
RELATIONS = ["sister", "brother", "mother", "father", "aunt", "uncle", "cousin", "neighbor",
             "grandmother", "grandfather", "best friend", "roommate", "boss", "daughter", "son"]
PLACES = ["library", "train station", "bakery", "park", "museum", "post office", "supermarket",
          "coffee shop", "beach", "cinema", "gym", "hardware store", "airport", "flower market",
          "swimming pool", "bookstore", "town hall", "football stadium", "bus stop", "garden center"]
CITIES = ["London", "Chicago", "Boston", "Denver", "Paris", "Berlin", "Dublin", "Seattle",
          "Toronto", "Madrid", "Sydney", "Miami", "Atlanta", "Glasgow", "Vienna", "Houston"]
DAYS = ["on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday", "on Saturday",
        "on Sunday", "next weekend", "tomorrow", "the day after tomorrow", "next Friday", "this evening"]
TIMES = ["7 o'clock", "half past 8", "noon", "midnight", "a quarter to 6", "9 in the morning",
         "4 in the afternoon", "10 tonight", "5 thirty", "lunchtime"]
FOODS = ["bread", "apples", "cheese", "coffee", "eggs", "rice", "tomatoes", "chocolate",
         "orange juice", "pasta", "carrots", "milk", "strawberries", "soup", "butter", "onions",
         "bananas", "yogurt", "potatoes", "lemons", "chicken", "cereal", "peanut butter", "tea"]
ACTIVITIES = ["hiking in the hills", "painting the kitchen", "playing chess", "baking cookies",
              "watching old movies", "cleaning the garage", "planting tomatoes", "riding bikes",
              "learning to swim", "fixing the fence", "reading mystery novels", "playing tennis",
              "walking the dog", "building a bookshelf", "visiting old friends", "fishing at the lake"]
OBJECTS = ["umbrella", "laptop", "bicycle", "lamp", "kettle", "jacket", "camera", "backpack",
           "guitar", "watch", "sofa", "printer", "suitcase", "mirror", "blanket", "ladder",
           "toaster", "notebook", "phone charger", "winter coat"]
ROOMS = ["kitchen", "living room", "basement", "hallway", "bedroom", "office", "attic", "garage"]
ADJECTIVES = ["small", "old", "new", "bright red", "heavy", "quiet", "friendly", "tiny",
              "beautiful", "strange", "cheap", "expensive", "broken", "noisy", "lovely"]
ANIMALS = ["puppy", "kitten", "parrot", "rabbit", "goldfish", "hamster", "tortoise", "horse"]
WEATHER = ["rainy", "sunny", "windy", "cold", "warm", "cloudy", "foggy", "snowy"]
TRANSPORT = ["train", "bus", "ferry", "flight", "coach"]
CHORES = ["lock the back door", "water the plants", "feed the cat", "take out the rubbish",
          "call the plumber", "return the library books", "pay the electric bill",
          "book the restaurant", "charge your phone", "turn off the oven"]

GENERAL_TEMPLATES = [
    "{name} is meeting {name2} at the {place} {day}.",
    "Could you pick up some {food} and {food2} on your way home?",
    "The {transport} to {city} leaves at {time} from platform {n_small}.",
    "We spent the weekend {activity} with my {relation} near {city}.",
    "My {relation} just adopted a {adjective} {animal} called {name}.",
    "Please remember to {chore} before {time} {day}.",
    "The forecast for {city} says it will be {weather} {day}.",
    "The {object} in {name}'s {room} needs to be replaced.",
    "{name} bought a {adjective} {object} for {price} dollars.",
    "I think the {place} closes at {time} {day}.",
    "Have you seen my {adjective} {object}? I left it in the {room}.",
    "{name} and {name2} are flying to {city} {day}.",
    "There were about {n_big} people at the {place} this morning.",
    "If it stays {weather}, {name} wants to spend {day_plain} {activity}.",
    "The recipe calls for {n_small} cups of {food} and some {food2}.",
    "{name} has been {activity} every {day_plain} for {n_small} years.",
    "Let's meet outside the {place} at {time} {day}.",
    "My {relation} forgot the {object} on the {transport} to {city}.",
    "The kids want {food} for dinner again, but {name} made {food2}.",
    "Our {room} looks much bigger since {name} moved the {object}.",
    "I'll call {name} {day} to ask about the {adjective} {animal}.",
    "The {transport} from {city} was {n_small} hours late because of the {weather} weather.",
    "{name} says the new {place} near the {place2} is really {adjective_plain}.",
    "Can you believe the {object} cost {price} dollars?",
    "We ran out of {food}, so {name} went to the {place}.",
    "No one told my {relation} the {place} was closed on {day_plain}s.",
    "{name} fell asleep on the {object} while watching television.",
    "{city} was {weather} all week, so we stayed inside {activity}.",
    "Would you like {food} or {food2} with your breakfast?",
    "My {relation} lives {n_small} streets away from the {place}.",
]
DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PLAIN_ADJECTIVES = ["nice", "busy", "crowded", "cozy", "expensive", "quiet", "good", "popular"]

# Slot name -> word list, for the templates above ({drug}, {drug2}, ... all draw from "drug").
WORD_SLOTS = {
    "drug": DRUGS, "procedure": PROCEDURES, "route": ROUTES, "freq": FREQUENCIES, "anatomy": ANATOMY,
    "condition": CONDITIONS, "finding": FINDINGS, "exam_finding": EXAM_FINDINGS, "reaction": REACTIONS,
    "specialty": SPECIALTIES, "anesthesia": ANESTHESIA, "complication": COMPLICATIONS,
    "family": FAMILY, "when": WHEN, "name": NAMES, "relation": RELATIONS, "place": PLACES,
    "city": CITIES, "day": DAYS, "day_plain": DAY_NAMES, "time": TIMES, "food": FOODS,
    "activity": ACTIVITIES, "object": OBJECTS, "room": ROOMS, "adjective": ADJECTIVES,
    "adjective_plain": PLAIN_ADJECTIVES, "animal": ANIMALS, "weather": WEATHER,
    "transport": TRANSPORT, "chore": CHORES,
}
# Slot name -> inclusive integer range.
NUMBER_RANGES = {
    "n_days": (2, 14), "n_small": (2, 9), "sys": (88, 188), "dia": (46, 108), "hr": (44, 136),
    "sat": (84, 99), "n_big": (20, 400), "price": (5, 900), "minutes": (15, 60),
}
