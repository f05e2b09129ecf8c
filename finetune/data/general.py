"""General prompts: short factual questions and advice requests with short reference replies.

The replies are templated (one fixed reply per fact), which NOTES found a tiny model learns within
a few hundred steps; every fact has six phrasings, one of them held out for evaluation.
"""

from __future__ import annotations

from finetune.data.holdout import Candidate
from formats.calendar import DAYS, MONTHS

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Brazil": "Brasilia",
    "Argentina": "Buenos Aires",
    "Mexico": "Mexico City",
    "India": "New Delhi",
    "Kenya": "Nairobi",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Colombia": "Bogota",
    "Cuba": "Havana",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "South Korea": "Seoul",
    "Indonesia": "Jakarta",
    "the Philippines": "Manila",
    "Nigeria": "Abuja",
    "Morocco": "Rabat",
    "Belgium": "Brussels",
    "the Netherlands": "Amsterdam",
    "Switzerland": "Bern",
    "the Czech Republic": "Prague",
    "Ukraine": "Kyiv",
    "the United Kingdom": "London",
    "the United States": "Washington, D.C.",
    "New Zealand": "Wellington",
    "Pakistan": "Islamabad",
    "Saudi Arabia": "Riyadh",
    "Ethiopia": "Addis Ababa",
    "Iceland": "Reykjavik",
    "Romania": "Bucharest",
    "Croatia": "Zagreb",
    "Venezuela": "Caracas",
}
COLOURS = {
    "grass": "green",
    "snow": "white",
    "coal": "black",
    "a banana": "yellow",
    "a ripe tomato": "red",
    "the clear daytime sky": "blue",
    "an orange": "orange",
    "milk chocolate": "brown",
    "a lemon": "yellow",
    "milk": "white",
    "blood": "red",
    "a lime": "green",
    "a crow": "black",
    "a flamingo": "pink",
    "an eggplant": "purple",
    "a polar bear": "white",
    "a carrot": "orange",
    "a strawberry": "red",
    "a pumpkin": "orange",
    "a frog": "green",
    "an elephant": "grey",
    "a pea": "green",
    "a cherry": "red",
    "a raven": "black",
    "a canary": "yellow",
    "a lavender flower": "purple",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "up": "down",
    "day": "night",
    "left": "right",
    "open": "closed",
    "fast": "slow",
    "happy": "sad",
    "wet": "dry",
    "tall": "short",
    "full": "empty",
    "early": "late",
    "hard": "soft",
    "loud": "quiet",
    "rich": "poor",
    "strong": "weak",
    "win": "lose",
    "begin": "end",
    "push": "pull",
    "inside": "outside",
    "above": "below",
    "give": "take",
    "buy": "sell",
    "true": "false",
    "alive": "dead",
    "thick": "thin",
    "heavy": "light",
    "clean": "dirty",
    "first": "last",
    "north": "south",
    "east": "west",
    "friend": "enemy",
    "always": "never",
    "awake": "asleep",
    "cheap": "expensive",
    "near": "far",
    "young": "old",
    "remember": "forget",
    "arrive": "leave",
    "safe": "dangerous",
}
SOUNDS = {
    "dog": "woof",
    "cat": "meow",
    "cow": "moo",
    "duck": "quack",
    "sheep": "baa",
    "pig": "oink",
    "horse": "neigh",
    "lion": "roar",
    "owl": "hoot",
    "snake": "hiss",
    "bee": "buzz",
    "frog": "croak",
    "wolf": "howl",
    "mouse": "squeak",
    "donkey": "hee-haw",
    "rooster": "cock-a-doodle-doo",
    "goat": "bleat",
    "crow": "caw",
    "pigeon": "coo",
    "turkey": "gobble",
    "hen": "cluck",
}
ADVICE = {
    "I feel sad.": "Talk to someone you trust.",
    "I feel lonely.": "Call a friend or join a local club.",
    "I can't sleep at night.": "Keep a regular bedtime and avoid screens before bed.",
    "I am stressed about work.": "Take short breaks and plan one task at a time.",
    "I have a headache.": "Drink water and rest; see a doctor if it lasts.",
    "I am nervous about a job interview.": "Prepare a few answers and practise them aloud.",
    "I forgot my friend's birthday.": "Apologise and plan something nice together.",
    "I spend too much money.": "Write a simple budget and track your spending.",
    "I want to get fit.": "Start with short walks and build up slowly.",
    "I keep procrastinating.": "Break the work into small steps and start with one.",
    "I had a fight with my best friend.": "Give it a little time, then talk calmly.",
    "I am worried about my exams.": "Make a study plan and review a little every day.",
    "I feel tired all the time.": "Sleep enough, eat well and see a doctor if it continues.",
    "I want to learn a new language.": "Practise a little every day with an app or a class.",
    "I moved to a new city and know nobody.": "Join a group or class to meet people.",
    "My plants keep dying.": "Check their light and water them less often.",
    "I am afraid of public speaking.": "Practise in front of a friend and start small.",
    "I want to eat healthier.": "Add more vegetables and cook simple meals at home.",
    "My room is always messy.": "Tidy for ten minutes every day.",
    "I feel anxious before flights.": "Breathe slowly and bring something calming to do.",
    "I made a mistake at work.": "Tell your manager honestly and offer a fix.",
    "I want to save for a holiday.": "Put a small amount aside every week.",
    "I miss my family.": "Call or video chat with them regularly.",
    "I can't focus while studying.": "Put your phone away and study in short blocks.",
    "I feel overwhelmed by chores.": "Make a list and do the smallest task first.",
}

PHRASINGS: dict[str, tuple[str, ...]] = {
    "capital": (
        "What is the capital of {s}?",
        "Name the capital of {s}.",
        "Which city is the capital of {s}?",
        "What city is the capital of {s}?",
        "Tell me the capital of {s}.",
        "The capital of {s} is which city?",
    ),
    "colour": (
        "What colour is {s}?",
        "What color is {s}?",
        "Which colour is {s}?",
        "Name the colour of {s}.",
        "Tell me the color of {s}.",
        "What is the colour of {s}?",
    ),
    "opposite": (
        "What is the opposite of {s}?",
        "Give the opposite of {s}.",
        "What word means the opposite of {s}?",
        "Name the opposite of the word {s}.",
        "What is the antonym of {s}?",
        "Tell me the opposite of {s}.",
    ),
    "animal_sound": (
        "What sound does a {s} make?",
        "What noise does a {s} make?",
        "Which sound does a {s} make?",
        "What does a {s} say?",
        "Name the sound a {s} makes.",
        "Tell me the sound a {s} makes.",
    ),
    "after": (
        "What {u} comes after {s}?",
        "Which {u} follows {s}?",
        "What is the {u} after {s}?",
        "Name the {u} after {s}.",
        "Which {u} comes right after {s}?",
        "Tell me the {u} after {s}.",
    ),
    "before": (
        "What {u} comes before {s}?",
        "Which {u} precedes {s}?",
        "What is the {u} before {s}?",
        "Name the {u} before {s}.",
        "Which {u} comes right before {s}?",
        "Tell me the {u} before {s}.",
    ),
    "advice": (
        "{s} What should I do?",
        "{s} Any advice?",
        "{s} What do you suggest?",
        "{s} How can I handle this?",
        "{s} Can you help me?",
        "{s} What would you recommend?",
    ),
}
N_RESERVED = 1


def _cycle_facts(
    kind: str, names: tuple[str, ...], unit: str
) -> list[tuple[str, str, str, str, str]]:
    """Day/month order in both directions ("What day comes after Monday?" -> "Tuesday")."""
    n = len(names)
    facts = []
    for i, name in enumerate(names):
        facts.append((kind, "after", name, unit, names[(i + 1) % n]))
        facts.append((kind, "before", name, unit, names[(i - 1) % n]))
    return facts


def _facts() -> list[tuple[str, str, str, str, str]]:
    """(row kind, phrasing set, subject, unit, reply) for every general fact."""
    facts = [("capital", "capital", s, "", a) for s, a in CAPITALS.items()]
    facts += [("colour", "colour", s, "", a) for s, a in COLOURS.items()]
    facts += [("opposite", "opposite", f'"{s}"', "", a) for s, a in OPPOSITES.items()]
    facts += [("animal_sound", "animal_sound", s, "", a) for s, a in SOUNDS.items()]
    facts += _cycle_facts("day_order", DAYS, "day")
    facts += _cycle_facts("month_order", MONTHS, "month")
    facts += [("advice", "advice", s, "", a) for s, a in ADVICE.items()]
    return facts


def candidates() -> list[Candidate]:
    """Every general question text, in a fixed order."""
    out = []
    for kind, phrasing_set, subject, unit, reply in _facts():
        phrasings = PHRASINGS[phrasing_set]
        for p, text in enumerate(phrasings):
            question = text.format(s=subject, u=unit)
            row = {"family": "general", "kind": kind, "question": question, "answer": reply}
            key = f"{kind}:{phrasing_set}:{subject}"
            out.append(Candidate(key, p, len(phrasings), N_RESERVED, row))
    return out
