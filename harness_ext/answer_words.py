"""Word answers (``corrupt_general``): does a chat reply state the reference answer?

The reply is read as ``answers`` reads it (markup gone, questions skipped), then:
1. A self-correction withdraws what came before it: after "No,", "Wait,", "Actually,",
   "Oops,", "Sorry,", "Correction:", "I mean", "or rather", "but it's actually" only the rest
   counts ("Sydney. No wait, Canberra."; "Many think it's Canberra, but it's actually Sydney").
2. Day and month order: order statements ("the day after Monday is Tuesday", "Tuesday comes
   after Monday", "June precedes July") decide when the reply makes any, read as for successor
   and predecessor numbers: the day on the asked side of the last statement about the
   question's day ("Wednesday comes after Tuesday" answers nothing about Monday).
3. Advice: at least half of the reference's content words (crude stems: "screens" = "screen"),
   leaving out words of the question, occur in the reply. A lenient proxy; judging open-ended
   advice is the judge's job.
4. Otherwise the reply is right if it mentions the reference or a listed alias ("gray" for
   "grey", "bark" for "woof") as whole words, ignoring accents, case, hyphens and punctuation;
   sounds and opposites in any inflection (howl, howls, howling, howled; enemy, enemies). A
   mention does not count when
   - the reference is a proper noun (capital, day, month) and the mention is in lower case in
     a reply that has capitals ("it may rain" does not say May);
   - it restates the question: the answer occurs in the question too and this mention follows
     the same word as there (articles count as one word), unless a word such as "colour"
     follows it ("An orange is orange": the first "orange" is the fruit);
   - it is rejected: a negation among the three words before it in its clause ("not Sydney",
     "isn't Sydney", "rather than Sydney") or a negated verb right after it ("Sydney is not
     the capital").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness_ext import answers

ALIASES: dict[str, tuple[str, ...]] = {
    "grey": ("gray",),
    "woof": ("bark",),
    "meow": ("miaow", "mew"),
    "baa": ("bleat",),
    "bleat": ("baa",),
    "croak": ("ribbit",),
    "hee haw": ("heehaw", "bray"),
    "neigh": ("whinny",),
    "cock a doodle doo": ("crow",),
    "kyiv": ("kiev",),
    "washington d c": ("washington dc", "washington"),
}
"""Other names of the same answer, keyed by the folded reference."""

INFLECTED_KINDS = ("animal_sound", "opposite")
_DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "every", "each", "any",
                "one", "my", "your", "its", "their", "our", "some"}
_KIND_NOUNS = {"colour", "color", "coloured", "colored", "hue", "shade", "sound", "noise",
               "city", "day", "month"}
_NEGATORS = {"not", "never", "nor", "neither", "isnt", "unlike", "except", "mistakenly",
             "wrongly", "incorrectly"}
_NEGATOR_PAIRS = {("instead", "of"), ("rather", "than"), ("other", "than"), ("confused", "with"),
                  ("mistaken", "for")}
_NEGATED_AFTER = {("isn't",), ("aren't",), ("wasn't",), ("is", "not"), ("are", "not"),
                  ("was", "not"), ("is", "never"), ("is", "wrong"), ("is", "incorrect")}
_CORRECTION = re.compile(
    r"(?:^|[.,;:!?()\u2014\u2013]\s*)(?:no|nope|wait|oops|sorry|correction|actually)"
    r"\s*[,.!:;\u2014\u2013]|\bi mean\b|\bor rather\b|\bscratch that\b|"
    r"\bbut\b[^.;]{0,20}?\b(?:actually|really|in fact)\b", re.I)
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[,;:.!?()\u2014\u2013]")
_STOP = {"a", "an", "the", "and", "or", "to", "of", "in", "on", "at", "for", "with", "your",
         "you", "them", "their", "they", "it", "its", "is", "be", "if", "then", "some", "one",
         "little", "few", "every", "each", "more", "less", "before", "after", "that",
         "this", "as", "up", "do", "can", "will", "so", "start", "try", "get", "make", "see"}


@dataclass(frozen=True)
class Word:
    norm: str  # folded: no accents, lower case
    text: str  # as written
    clause: int  # words of one clause share it (split at punctuation and "but")


def fold(text: str) -> str:
    """Lower case without accents (Bogotá = Bogota)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def words(text: str) -> list[Word]:
    """Words with clause numbers; hyphens split words ("hee-haw" = "hee haw")."""
    out, clause = [], 0
    for token in _TOKEN.findall(text):
        norm = fold(token)
        if not token[0].isalnum() or norm == "but":
            clause += 1
        else:
            out.append(Word(norm, token, clause))
    return out


def inflections(word: str) -> set[str]:
    """Regular inflections of one word: plural and verb forms."""
    forms = {word, word + "s", word + "es", word + "ed", word + "d", word + "ing"}
    if word.endswith("e"):
        forms.add(word[:-1] + "ing")
    if re.fullmatch(r".*[^aeiou]y", word):
        forms |= {word[:-1] + "ies", word[:-1] + "ied"}
    if re.fullmatch(r"[^aeiou]*[aeiou][bdgklmnprt]", word):
        forms |= {word + word[-1] + "ing", word + word[-1] + "ed"}
    return forms


def _forms(reference: str) -> list[tuple[str, ...]]:
    key = " ".join(w.norm for w in words(reference))
    return [tuple(key.split()), *(tuple(a.split()) for a in ALIASES.get(key, ()))]


def _mentions(ws: list[Word], forms: list[tuple[str, ...]], inflect: bool) -> list[tuple[int, int]]:
    """(start, end) word spans where a form occurs; its last word inflected if ``inflect``."""
    spans = []
    for i in range(len(ws)):
        for form in forms:
            got = [w.norm for w in ws[i : i + len(form)]]
            if len(got) == len(form) and got[:-1] == list(form[:-1]) and (
                    got[-1] == form[-1] or inflect and got[-1] in inflections(form[-1])):
                spans.append((i, i + len(form)))
    return spans


def _before(ws: list[Word], i: int) -> str | None:
    """The word before position ``i`` in its clause, articles as one class; None at the start."""
    if i == 0 or ws[i - 1].clause != ws[i].clause:
        return None
    return "<det>" if ws[i - 1].norm in _DETERMINERS else ws[i - 1].norm


def _rejected(ws: list[Word], start: int, end: int) -> bool:
    before = [w.norm for w in ws[max(0, start - 3) : start] if w.clause == ws[start].clause]
    if any(w in _NEGATORS or w.endswith("n't") for w in before):
        return True
    if any(pair in _NEGATOR_PAIRS for pair in zip(before, before[1:], strict=False)):
        return True
    after = tuple(w.norm for w in ws[end : end + 2] if w.clause == ws[end - 1].clause)
    return after[:1] in _NEGATED_AFTER or after in _NEGATED_AFTER


def _restates(ws: list[Word], start: int, end: int, question_before: set[str | None]) -> bool:
    follows_kind = end < len(ws) and ws[end].norm in _KIND_NOUNS
    return _before(ws, start) in question_before and not follows_kind


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:6]


def gives_advice(reply: str, reference: str, question: str) -> bool:
    """Rule 3: half of the reference's content words (not the question's) are in the reply."""
    asked = {_stem(w.norm) for w in words(question)}
    wanted = {_stem(w.norm) for w in words(reference) if w.norm not in _STOP} - asked
    said = {_stem(w.norm) for w in words(reply)}
    return bool(wanted) and len(wanted & said) >= len(wanted) / 2


def after_correction(text: str) -> str:
    """Rule 1: the text after the last self-correction (all of it when there is none)."""
    found = list(_CORRECTION.finditer(text))
    return text[found[-1].end() :] if found else text


def states_reference(reply: str, doc: Mapping[str, Any]) -> bool:
    """Whether ``reply`` states the row's reference ``answer`` (rules in the docstring)."""
    reference, question = str(doc["answer"]), str(doc.get("question") or "")
    kind = str(doc.get("kind") or "")
    text = after_correction(" . ".join(s.text for s in answers.sentences(reply) if not s.question))
    if kind == "advice":
        return gives_advice(text, reference, question)
    if kind in ("day_order", "month_order") and (side := answers.asked_side(question)):
        orders = answers.order_statements([text], names=True)
        anchors = re.findall(answers.NAMES, question)
        if orders:
            value = answers.ordered_answer(orders, side, anchors)
            return value is not None and fold(value) == fold(reference)
    ws, forms, inflect = words(text), _forms(reference), kind in INFLECTED_KINDS
    qws = words(question)
    question_before = {_before(qws, i) for i, _ in _mentions(qws, forms, inflect)} - {None}
    proper = reference[:1].isupper() and any(c.isupper() for c in text)
    for start, end in _mentions(ws, forms, inflect):
        if proper and not ws[start].text[:1].isupper():
            continue
        if not _rejected(ws, start, end) and not _restates(ws, start, end, question_before):
            return True
    return False
