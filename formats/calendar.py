"""Day and month names in order: facts the data generator asks about (``finetune.data``)
and the scorers read replies with (``harness_ext.answers``), so they live below both."""

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
