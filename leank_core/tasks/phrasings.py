"""What each split says: instructions, needles, questions, haystack templates and word pools.

The train and eval splits share task logic but nothing a model could memorise: each has its
own phrasings, haystack text, key and word vocabularies (syllables split by parity), so no
eval prompt and no (key, value) pair can equal a training one. The eval split follows
RULER's wording (``families`` adds eval-only formats); training uses paraphrases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Phrasing:
    """Everything a split says. ``{kind}`` is "number" or "uuid"; ``{kinds}`` its plural."""

    passkey_head: str
    passkey_needle: str
    passkey_question: str
    passkey_key: str
    niah_head: str
    niah_needle: str
    niah_question: str        # one value for one key
    niah_question_all: str    # several values ({keys} may list several keys)
    vt_head: str
    vt_first: str
    vt_link: str
    vt_question: str
    cwe_head: str
    cwe_question: str
    fwe_head: str
    fwe_question: str
    qa_head: str
    qa_document: str                 # one document: {title} and {body} (facts among filler sentences)
    qa_facts: tuple[str, ...]        # one fact per attribute: {name} has {value}
    qa_questions: tuple[str, ...]    # the question asking each attribute of {name}
    key_words: tuple[tuple[str, ...], tuple[str, ...]]  # niah keys are "first-second"
    var_letters: str                                    # variable_tracking names
    syllables: tuple[str, ...]                          # coded / list words
    passkey_haystack: tuple[str, ...]                   # sentences, or templates with {slots}
    haystack: tuple[str, ...]
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _syllables(parity: int) -> tuple[str, ...]:
    """Consonant-vowel syllables split by parity: words of the two splits never coincide."""
    return tuple(c + v for i, c in enumerate("bdfgklmnprstvz") for j, v in enumerate("aeiou") if (i + j) % 2 == parity)


_TRAIN_HAYSTACK = (
    "The {adj} {animal} {verb} near the {place}.",
    "In {season} the {animal}s {verb} along the {place}.",
    "Every {time}, a {adj} {animal} {verb} by the {place}.",
    "Old farmers say the {place} is {adj} in {season}.",
    "Nobody knew why the {animal} {verb} so often.",
    "A {adj} wind moved over the {place}.",
    "Rain fell.", "Birds sang.", "It was calm.", "Time passed slowly.",
)
_TRAIN_SLOTS = {
    "adj": ("quiet", "green", "muddy", "golden", "sleepy", "wild", "tall", "gentle", "dusty", "bright", "cold", "warm"),
    "animal": ("goat", "sparrow", "fox", "heron", "rabbit", "mule", "badger", "trout", "owl", "pony", "lamb", "crow"),
    "verb": ("rested", "wandered", "grazed", "waited", "drank", "hid", "slept", "ran", "stood", "called"),
    "place": ("meadow", "riverbank", "orchard", "hillside", "barn", "pond", "valley", "hedge", "field", "creek"),
    "season": ("spring", "summer", "autumn", "winter"),
    "time": ("morning", "evening", "dawn", "dusk", "night"),
}
_EVAL_ESSAY = (
    "The {adj} {thing} was sold at the {venue} for a fair price.",
    "On {day} the {team} met at the {venue} to discuss the {thing}.",
    "According to the {team}, the new {thing} seemed {adj}.",
    "Most {team}s agree that a {adj} {thing} is worth the effort.",
    "The {venue} closed early because the {thing} had arrived {adj}.",
    "Founders often learn this too late.",
    "Prices rose.", "Nothing changed.", "The shops opened.", "Work went on.",
)
_EVAL_SLOTS = {
    "adj": ("expensive", "modern", "broken", "useful", "strange", "popular", "costly", "simple", "rare", "heavy", "clever", "cheap"),
    "thing": ("laptop", "printer", "contract", "startup", "invoice", "engine", "website", "ticket", "product", "gadget"),
    "venue": ("market", "office", "station", "library", "factory", "harbor", "mall", "bank", "studio", "warehouse"),
    "team": ("investor", "engineer", "banker", "designer", "manager", "clerk", "founder", "lawyer"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
}
_RULER_NOISE = (
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.",
)

PHRASINGS: dict[str, Phrasing] = {
    "train": Phrasing(
        passkey_head="A secret access key is written somewhere in the notes below. Find it and keep it in mind.\n\n",
        passkey_needle="The access key is {value}. Keep it in mind: the access key is {value}.",
        passkey_question="What is the access key? The access key is",
        passkey_key="access key",
        niah_head="Some {kinds} are stored in the notes below, each under a name. Remember them.\n\n",
        niah_needle="The {kind} stored under {key} is {value}.",
        niah_question="Which {kind} is stored under {key}? The {kind} stored under {key} is",
        niah_question_all="Which {kinds} are stored under {keys}? The {kinds} stored under {keys} are",
        vt_head="Follow the assignments hidden in the notes below.\n\n",
        vt_first="Set {name} to {value}",
        vt_link="Set {name} to {prev}",
        vt_question="Which variables end up holding {value}? The {n} variables holding {value} are:",
        cwe_head="Here is a list of words; some of them are repeated many times.\n\nWords:",
        cwe_question="Which {n} words occur most often in the list? The {n} words that occur most often are:",
        fwe_head="Here is a text in a secret code; count how often each coded word is used.\n\nCode:",
        fwe_question="Which {n} coded words are used most often in the text? The {n} most used coded words are:",
        qa_head="Short notes about some villagers are mixed into the notes below. Use them to answer the question.",
        qa_document="\n\nAbout {title}: {body}",
        qa_facts=("{name} comes from {value}.", "{name} tends the {value} orchard.", "{name} keeps a pony called {value}."),
        qa_questions=("Where does {name} come from? The home of {name} is",
                      "Which orchard does {name} tend? The orchard {name} tends is",
                      "What is the name of {name}'s pony? The pony of {name} is called"),
        key_words=(
            ("amber", "brave", "calm", "dizzy", "eager", "fuzzy", "giddy", "happy", "icy", "jolly", "kind", "lucky",
             "merry", "noble", "odd", "proud", "rapid", "shy", "tidy", "vivid"),
            ("acorn", "beetle", "cedar", "daisy", "elm", "finch", "gecko", "hazel", "iris", "juniper", "koala",
             "lily", "maple", "newt", "otter", "poppy", "quail", "robin", "spruce", "tulip"),
        ),
        var_letters="abcdefghijklmnopqrstuvwxyz",
        syllables=_syllables(0),
        passkey_haystack=_TRAIN_HAYSTACK,
        haystack=_TRAIN_HAYSTACK,
        slots=_TRAIN_SLOTS,
    ),
    "eval": Phrasing(
        passkey_head=("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                      "I will quiz you about the important information there.\n\n"),
        passkey_needle="The pass key is {value}. Remember it. {value} is the pass key.",
        passkey_question="What is the pass key? The pass key is",
        passkey_key="pass key",
        niah_head=("Some special magic {kinds} are hidden within the following text. Make sure to memorize it. "
                   "I will quiz you about the {kinds} afterwards.\n\n"),
        niah_needle="One of the special magic {kinds} for {key} is: {value}.",
        niah_question=("What is the special magic {kind} for {key} mentioned in the provided text? "
                       "The special magic {kind} for {key} mentioned in the provided text is"),
        niah_question_all=("What are all the special magic {kinds} for {keys} mentioned in the provided text? "
                           "The special magic {kinds} for {keys} mentioned in the provided text are"),
        vt_head="Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n",
        vt_first="VAR {name} = {value}",
        vt_link="VAR {name} = VAR {prev}",
        vt_question=("Question: Find all variables that are assigned the value {value} in the text above. "
                     "Answer: According to the chain(s) of variable assignment in the text above, "
                     "{n} variables are assigned the value {value}, they are:"),
        cwe_head=("Below is a list of words. In these words, some appear more often than others. "
                  "Memorize the ones that appear most often.\n\n"),
        cwe_question=("Question: What are the {n} most common words in the above list? "
                      "Answer: The top {n} words that appear most often in the list are:"),
        fwe_head=("Read the following coded text and track the frequency of each coded word. "
                  "Find the {n} most frequently appeared coded words.\n\n"),
        fwe_question=("Question: What are the {n} most frequently appeared words in the above coded text? "
                      "Answer: According to the coded text above, the {n} most frequently appeared words are:"),
        qa_head=("Answer the question based on the given documents. Only give me the answer and do not output any "
                 "other words.\n\nThe following are given documents."),
        qa_document="\n\nDocument: {title}\n{body}",
        qa_facts=("{name} was born in {value}.", "{name} is the founder of {value}.", "{name} wrote a book called {value}."),
        qa_questions=("Question: Where was {name} born? Answer: The birthplace of {name} is",
                      "Question: What did {name} found? Answer: The company founded by {name} is",
                      "Question: What book did {name} write? Answer: The book written by {name} is"),
        key_words=(
            ("ancient", "bitter", "crimson", "distant", "elegant", "fragile", "grumpy", "hollow", "ivory", "jagged",
             "lavish", "mellow", "nervous", "opaque", "placid", "rustic", "solemn", "tender", "vacant", "wistful"),
            ("anchor", "basket", "candle", "drawer", "engine", "faucet", "goblet", "helmet", "kettle", "ladder",
             "mirror", "napkin", "pillow", "quiver", "saddle", "teapot", "violin", "wallet", "zipper", "bucket"),
        ),
        var_letters="ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        syllables=_syllables(1),
        passkey_haystack=_RULER_NOISE,
        haystack=_EVAL_ESSAY,
        slots=_EVAL_SLOTS,
    ),
}

POOL_SENTENCES = 512   # haystack sentences per family, drawn from the templates once per split
POOL_WORDS = 4096      # coded / list words per split


def sentence_pool(templates: tuple[str, ...], slots: dict[str, tuple[str, ...]], name: str) -> tuple[str, ...]:
    """A fixed pool of distinct filler sentences (fixed templates appear as they are)."""
    rng = random.Random(f"leank-pool/{name}")
    pool = {t for t in templates if "{" not in t}
    templated = [t for t in templates if "{" in t]
    for _ in range(20 * POOL_SENTENCES):
        if len(pool) >= POOL_SENTENCES or not templated:
            break
        pool.add(rng.choice(templated).format(**{k: rng.choice(v) for k, v in slots.items()}))
    return tuple(sorted(pool))


def word_pool(syllables: tuple[str, ...], name: str) -> tuple[str, ...]:
    rng = random.Random(f"leank-pool/{name}")
    words: dict[str, None] = {}
    while len(words) < POOL_WORDS:
        words["".join(rng.choice(syllables) for _ in range(3))] = None
    return tuple(words)
