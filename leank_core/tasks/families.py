"""Phrasing families: the train split has one, the eval split several that training never sees.

A model or mask tuned to one wording can look fine on it and fail on the next format a user
tries (issue 20: a mask lost ~10 points on an outside retrieval task). The eval split
therefore rotates some tasks (:data:`FAMILY_TASKS`) over several families per sample: RULER's
wording and three other formats (meeting minutes, a team chat, a system log), each with its
own filler text. All of them are eval-only: their templates, filler words and needles share
nothing with the train family, and their keys and coded words come from the eval syllables.
The other tasks keep RULER's wording, so their cells stay what they were.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from leank_core.tasks.phrasings import PHRASINGS, Phrasing, sentence_pool, word_pool

RULER = PHRASINGS["eval"]

_MEMO = replace(
    RULER,
    niah_head="Below are the minutes of several meetings. Somewhere in them, {kinds} were recorded for a few codenames.\n\n",
    niah_needle="Recorded for codename {key}: the {kind} {value}.",
    niah_question="Which {kind} was recorded for codename {key}? The {kind} recorded for codename {key} is",
    niah_question_all="Which {kinds} were recorded for codenames {keys}? The {kinds} recorded for codenames {keys} are",
    vt_head="The minutes below also contain bookkeeping entries that copy amounts between ledger codes.\n\n",
    vt_first="Ledger {name} opens with {value}",
    vt_link="Ledger {name} copies ledger {prev}",
    vt_question="Which ledger codes end up holding {value}? The {n} ledger codes holding {value} are:",
    qa_head="Staff profiles from the handbook are filed between the meeting minutes below. Answer from them.",
    qa_document="\n\nProfile - {title}\n{body}",
    qa_facts=("{name} grew up in {value}.", "{name} leads the {value} project.", "{name} sits in building {value}."),
    qa_questions=("Where did {name} grow up? According to the profiles, {name} grew up in a place that is",
                  "Which project does {name} lead? According to the profiles, the project {name} leads is",
                  "In which building does {name} sit? According to the profiles, the building is"),
    haystack=(
        "{person} reviewed the {doc} before the {meeting}.",
        "The {meeting} was moved to {weekday} afternoon.",
        "{person} asked the {dept} for a copy of the {doc}.",
        "Action item: {person} will circulate the {doc} after the {meeting}.",
        "Budget lines for the {dept} stay as approved.",
        "No objections were raised.", "Minutes approved.", "The chair thanked everyone.",
    ),
    passkey_haystack=("Minutes approved.", "No objections were raised.", "The chair thanked everyone.",
                      "Attendance was recorded.", "The item was deferred."),
    slots={
        "person": ("Priya", "Tomasz", "Ingrid", "Kwame", "Lucia", "Hamid", "Sven", "Aiko", "Rosa", "Dmitri"),
        "doc": ("quarterly summary", "draft agenda", "site survey", "supplier list", "audit memo", "seating plan",
                "travel policy", "safety checklist"),
        "meeting": ("board meeting", "weekly sync", "planning session", "town hall", "review call"),
        "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
        "dept": ("finance team", "legal office", "design studio", "front desk", "facilities crew"),
    },
)

_CHAT = replace(
    RULER,
    niah_head="Here is a long team chat. Some messages share secret {kinds}, each for a handle. Keep track of them.\n\n",
    niah_needle="[admin] secret {kind} for @{key}: {value}",
    niah_question="[you] what was the secret {kind} for @{key}? [admin] the secret {kind} for @{key} is",
    niah_question_all="[you] what were the secret {kinds} for @{keys}? [admin] the secret {kinds} for @{keys} are",
    vt_head="In this chat a token is handed from one user to the next; follow who ends up with which token.\n\n",
    vt_first="[admin] @{name} now holds token {value}",
    vt_link="[admin] @{name} takes over whatever @{prev} holds",
    vt_question="[you] which users end up holding token {value}? [admin] the {n} users holding token {value} are:",
    qa_head="People in this chat posted short intros. Answer the last message from them.",
    qa_document="\n\n[intro] {title} says hi. {body}",
    qa_facts=("{name} lives in {value}.", "{name} plays drums in a band named {value}.", "{name} has a cat named {value}."),
    qa_questions=("[you] where does {name} live? [bot] from the intros, {name} lives in a place that is",
                  "[you] what is the band of {name} called? [bot] from the intros, the band is",
                  "[you] what is the name of {name}'s cat? [bot] from the intros, the cat is"),
    haystack=(
        "[{user}] did anyone see the {thing} I left in the {room}?",
        "[{user}] {reaction}",
        "[{user}] brb, {errand}",
        "[{user}] the {thing} in the {room} is {state} again",
        "[bot] reminder: standup in ten minutes", "[bot] deploy finished", "[bot] new ticket assigned",
    ),
    passkey_haystack=("[bot] deploy finished", "[bot] new ticket assigned", "[bot] reminder: standup in ten minutes",
                      "[bot] backup done", "[bot] all checks passed"),
    slots={
        "user": ("mika", "jonas", "ravi", "elle", "tobi", "nadia", "oskar", "yuki"),
        "thing": ("charger", "umbrella", "stapler", "headset", "marker", "parking badge", "lunchbox"),
        "room": ("kitchen", "lobby", "meeting room", "server closet", "break room"),
        "reaction": ("lol", "same here", "+1", "no idea", "on it", "thanks!", "sounds good"),
        "errand": ("grabbing lunch", "picking up a parcel", "walking the dog", "refilling my coffee"),
        "state": ("broken", "missing", "back", "fixed", "unplugged"),
    },
)

_RECORDS = replace(
    RULER,
    niah_head="The following is a service log. A few {kinds} were stored under named slots; remember them.\n\n",
    niah_needle="STORE slot={key} {kind}={value}",
    niah_question="LOOKUP slot={key}: the {kind} stored in slot {key} is",
    niah_question_all="LOOKUP slots={keys}: the {kinds} stored in slots {keys} are",
    vt_head="The log also records register moves. Track them.\n\n",
    vt_first="MOV {name}, {value}",
    vt_link="MOV {name}, {prev}",
    vt_question="LOOKUP: the registers holding {value} at the end are, all {n} of them:",
    qa_head="User records are embedded in the service log below. Answer the lookup from them.",
    qa_document="\n\nRECORD user={title}\n{body}",
    qa_facts=("{name}.region={value}", "{name}.team={value}", "{name}.device={value}"),
    qa_questions=("LOOKUP {name}.region: the region of {name} is",
                  "LOOKUP {name}.team: the team of {name} is",
                  "LOOKUP {name}.device: the device of {name} is"),
    haystack=(
        "{level} {service}: {event}",
        "{level} {service}: {event} after {count} retries",
        "{level} {service}: {event} in {count} ms",
        "INFO health: ok", "INFO gc: pause", "DEBUG tick",
    ),
    passkey_haystack=("INFO health: ok", "INFO gc: pause", "DEBUG tick", "INFO heartbeat", "DEBUG idle"),
    slots={
        "level": ("INFO", "DEBUG", "WARN", "NOTICE"),
        "service": ("scheduler", "billing", "auth", "indexer", "mailer", "uploader", "gateway"),
        "event": ("job finished", "request retried", "connection pooled", "cache refreshed", "queue drained",
                  "config reloaded", "token renewed"),
        "count": ("3", "12", "40", "85", "230", "512"),
    },
)

FAMILIES: dict[str, dict[str, Phrasing]] = {
    "train": {"train": PHRASINGS["train"]},
    "eval": {"ruler": RULER, "memo": _MEMO, "chat": _CHAT, "records": _RECORDS},
}
FAMILY_TASKS: tuple[str, ...] = ("niah_reworded", "variable_tracking_chains", "qa_documents")


def family_of(split: str, task: str, index: int) -> str:
    """The family a sample is worded in: eval samples of :data:`FAMILY_TASKS` rotate over the eval
    families every two indices (niah alternates numbers and uuids by index, so both meet every
    family); everything else uses its split's first family."""
    names = list(FAMILIES[split])
    return names[(index // 2) % len(names)] if task in FAMILY_TASKS else names[0]


@dataclass(frozen=True)
class FamilyPools:
    """One phrasing family's wording with its filler pools (built once per generator)."""

    phrasing: Phrasing
    sentences: tuple[str, ...]
    passkey_sentences: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def build(cls, split: str, family: str) -> "FamilyPools":
        p = FAMILIES[split][family]
        name = split if family in ("train", "ruler") else f"{split}-{family}"  # the first families' pools predate families
        return cls(p, tuple(" " + s for s in sentence_pool(p.haystack, p.slots, f"{name}/haystack")),
                   tuple(" " + s for s in sentence_pool(p.passkey_haystack, p.slots, f"{name}/passkey")),
                   word_pool(p.syllables, f"{split}/words"))
