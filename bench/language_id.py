"""How well the matrix's "answered in another language" flag identifies text (issue 31): py3langid,
restricted as `lorakit.analysis.language_id.identify` restricts it, on the kit's own English references
(every text of data/demo/*.jsonl), French sentences (the French demo scenario's when it is importable,
and the handwritten ones below) and handwritten German ones, whole and cut to their first 1-4 words.

    .venv/bin/python bench/language_id.py          # prints one JSON object
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorakit.analysis.language_id import MIN_WORDS, identify  # noqa: E402

FRENCH = """Demain nous prenons le train pour Lyon.
Peux-tu me passer le sel, s'il te plaît ?
Il fait vraiment beau aujourd'hui.
J'ai croisé un vieil ami hier soir.
Les enfants jouent dans le jardin derrière la maison.
Nous devons encore acheter du pain et du lait.
Le bus passe tous les matins à huit heures.
Ma sœur habite à Marseille depuis trois ans.
As-tu déjà lu le nouveau livre ?
Ce week-end, nous partons marcher en montagne.
Le restaurant au coin de la rue est très bon.
Il travaille comme professeur dans une école primaire.
Ferme la fenêtre, il fait froid.
À quelle heure commence le film ce soir ?
Je bois toujours une tasse de café le matin.
Le chat dort sur le canapé.
Notre voisin a un grand chien noir.
On se retrouve à trois heures devant la gare.
Le médecin dit que je dois boire plus d'eau.
L'été, nous allons à la mer.
Le musée est fermé le lundi.
Elle a encore oublié ses clés.
Combien coûte cette veste ?
Mon frère joue au football tous les mardis.
Ce soir, nous préparons une soupe ensemble.
Le patient reçoit du paracétamol deux fois par jour.
La tension artérielle est stable depuis hier.
Prenez le comprimé après le repas.
Je te rappelle plus tard.
La route est fermée à cause des travaux.
oui
merci beaucoup
bonjour à tous
c'est très bien
non, pas aujourd'hui""".splitlines()

GERMAN = """Morgen fahren wir mit dem Zug nach Hamburg.
Kannst du mir bitte das Salz geben?
Das Wetter ist heute wirklich schön.
Ich habe gestern einen alten Freund getroffen.
Die Kinder spielen im Garten hinter dem Haus.
Wir müssen noch Brot und Milch kaufen.
Der Bus kommt jeden Morgen um acht Uhr.
Meine Schwester wohnt seit drei Jahren in Berlin.
Hast du schon das neue Buch gelesen?
Am Wochenende gehen wir in den Bergen wandern.
Das Restaurant an der Ecke ist sehr gut.
Er arbeitet als Lehrer an einer Grundschule.
Bitte schließ das Fenster, es ist kalt.
Wann beginnt der Film heute Abend?
Ich trinke morgens immer eine Tasse Kaffee.
Die Katze schläft auf dem Sofa.
Unser Nachbar hat einen großen Hund.
Wir treffen uns um drei vor dem Bahnhof.
Der Arzt sagt, ich soll mehr Wasser trinken.
Im Sommer fahren wir ans Meer.
Das Museum ist am Montag geschlossen.
Sie hat ihre Schlüssel wieder vergessen.
Wie viel kostet diese Jacke?
Mein Bruder spielt jeden Dienstag Fußball.
Heute Abend kochen wir zusammen Suppe.
Der Patient bekommt zweimal täglich Ibuprofen.
Die Blutdruckwerte sind seit gestern stabil.
Bitte nehmen Sie die Tablette nach dem Essen.
Ich rufe dich später noch einmal an.
Die Straße ist wegen Bauarbeiten gesperrt.
ja
danke schön
guten Morgen
das ist gut
nein, heute nicht""".splitlines()


def french_demo_sentences() -> list[str]:
    """The French demo scenario's sentences (its builder's plan, no audio), [] where it is not there."""
    try:
        from lorakit.demo.corpus_fr import plan_corpus_fr
    except ImportError:
        return []
    sizes = {"train_domain_only": 200, "domain": 200, "heldout": 200, "replay": 100, "domain_dev": 0, "heldout_dev": 0}
    return sorted({u.text for u in plan_corpus_fr(0, sizes)[0]})


def accuracy(texts: list[str], language: str, words: int | None = None) -> dict:
    """Of `texts` (cut to their first `words` words), how many are identified as `language`; texts too short
    for the flag are judged anyway here (the identifier alone), and counted apart."""
    from lorakit.analysis.language_id import CANDIDATES, classify

    cut = [" ".join(t.split()[:words]) if words else t for t in texts]
    right = sum(classify(t, {language, "en", *CANDIDATES}) == language for t in cut)
    flagged = sum(identify(t, language) not in (None, language) for t in cut)  # what the flag would call another language
    return {"n": len(cut), "identified": right, "accuracy": round(right / max(1, len(cut)), 4), "false_flags": flagged}


def main() -> None:
    english = sorted({json.loads(line)["text"] for f in glob.glob("data/demo/*.jsonl") for line in open(f)})
    sets = {"en (data/demo references)": (english, "en"), "fr (French demo scenario)": (french_demo_sentences(), "fr"),
            "fr (handwritten)": (FRENCH, "fr"), "de (handwritten)": (GERMAN, "de")}
    out = {"min_words": MIN_WORDS, "whole": {}, "first_words": {}}
    for name, (texts, language) in sets.items():
        if texts:
            out["whole"][name] = accuracy(texts, language)
            out["first_words"][name] = {n: accuracy(texts, language, n)["accuracy"] for n in (1, 2, 3, 4)}
    # the flag's purpose: an English hypothesis for a French or German clip
    out["english_text_for_fr_clip_flagged"] = sum(identify(t, "fr") == "en" for t in english if len(t.split()) >= MIN_WORDS)
    out["english_text_for_de_clip_flagged"] = sum(identify(t, "de") == "en" for t in english if len(t.split()) >= MIN_WORDS)
    out["english_texts_judged"] = sum(len(t.split()) >= MIN_WORDS for t in english)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
