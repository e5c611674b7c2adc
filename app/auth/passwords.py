"""Password rules (length, digits, likeness to username or email, common ones); password version."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from difflib import SequenceMatcher

from app.auth.models import User
from app.core.errors import ValidationFailed

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MIN_LENGTH = 8
MAX_SIMILARITY = 0.7

# The most used passwords of public breach corpora (lower-cased). Shorter ones are
# already refused by the length rule; they are kept so the list reads as the source does.
COMMON_PASSWORDS: frozenset[str] = frozenset(
    """
    123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon
    123123 baseball abc123 football monkey letmein 696969 shadow master 666666
    qwertyuiop 123321 mustang 1234567890 michael 654321 superman 1qaz2wsx 7777777
    121212 000000 qazwsx 123qwe killer trustno1 jordan jennifer zxcvbnm asdfgh
    hunter buster soccer harley batman andrew tigger sunshine iloveyou 2000
    charlie robert thomas hockey ranger daniel starwars klaster 112233 george
    computer michelle jessica pepper 1111 zxcvbn 555555 11111111 131313 freedom
    777777 pass maggie 159753 aaaaaa ginger princess joshua cheese amanda summer
    love ashley nicole chelsea biteme matthew access yankees 987654321 dallas
    austin thunder taylor matrix mobilemail mom monitor monitoring montana moon
    moscow password1 password12 password123 passw0rd p@ssw0rd p@ssword pa$$word
    qwerty123 qwerty1234 qwertyui qwerty12 1q2w3e4r 1q2w3e4r5t 1q2w3e4r5t6y
    q1w2e3r4 q1w2e3r4t5 zaq12wsx zaq1zaq1 1qazxsw2 iloveyou1 iloveyou2 sunshine1
    princess1 football1 baseball1 superman1 welcome welcome1 welcome123 admin
    admin123 administrator abcd1234 abcdefgh abcdef123 abc12345 aa123456 a1b2c3d4
    asdfghjkl asdfasdf asdf1234 zxcvbnm1 11223344 12341234 12344321 87654321
    88888888 99999999 00000000 22222222 12121212 123123123 147258369 741852963
    159357 qweasdzxc qweasd123 1234qwer qwer1234 letmein1 letmein123 trustno1!
    changeme changeme123 secret123 default123 guest1234 football123 baseball123
    monkey123 dragon123 master123 shadow123 jordan23 michael1 jennifer1 charlie1
    whatever internet computer1 starwars1 hello123 hello1234 helloworld
    blink182 liverpool arsenal chelsea1 manchester barcelona juventus
    basketball jessica1 michelle1 butterfly sweetheart flower123 lovely123
    loveme123 iloveu123 babygirl1 precious1 beautiful chocolate pokemon123
    minecraft fortnite123 samsung123 google123 linkedin facebook1 myspace1
    trustme123 security1 letmein! password! password1! qwerty! superstar
    alexander elizabeth christopher jonathan benjamin victoria samantha
    """.split()  # noqa: SIM905 - a word list reads best as words
)


def password_problems(password: str, *, username: str, email: str) -> list[str]:
    """Every rule the password breaks, as messages a user can act on (empty when it is fine)."""
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(
            f"This password is too short. It must contain at least {MIN_LENGTH} characters."
        )
    if password.isdigit():
        problems.append("This password is entirely numeric.")
    lowered = password.casefold()
    # Containment in the whole address also covers its local part ("alice.smith@...").
    if (lowered and lowered in username.casefold()) or _similar(lowered, username):
        problems.append("The password is too similar to the username.")
    elif (lowered and lowered in email.casefold()) or _similar(lowered, email.rpartition("@")[0]):
        problems.append("The password is too similar to the email address.")
    if lowered in COMMON_PASSWORDS:
        problems.append("This password is too common.")
    return problems


def _similar(password: str, attribute: str) -> bool:
    """Django's UserAttributeSimilarityValidator (max similarity 0.7) on one attribute.

    The attribute and each of its parts (split at non-word characters) are compared
    with SequenceMatcher's quick ratio; a part much shorter than a long password is
    skipped, as in Django. A password containing the whole attribute is similar too.
    """
    value = attribute.casefold()
    if not value:
        return False
    if len(value) >= 3 and value in password:
        return True
    for part in [*re.split(r"\W+", value), value]:
        if not part or _too_short_to_compare(password, part):
            continue
        if SequenceMatcher(a=password, b=part).quick_ratio() >= MAX_SIMILARITY:
            return True
    return False


def _too_short_to_compare(password: str, part: str) -> bool:
    # Django's exceeds_maximum_length_ratio.
    return len(password) >= 10 * len(part) and len(part) < MAX_SIMILARITY / 2 * len(password)


def check_password(password: str, *, username: str, email: str, field: str) -> None:
    """Raise ValidationFailed (422, one `errors` entry per broken rule at `field`)."""
    problems = password_problems(password, username=username, email=email)
    if problems:
        raise ValidationFailed(
            " ".join(problems),
            errors=[{"field": field, "message": message} for message in problems],
        )


def password_stamp(user: User) -> int:
    """The version of the user's password: the time it was last set, in whole microseconds.

    Access tokens carry it (claim `pwv`), so a password change or reset, which moves
    it, ends every access token issued before, however close in time.
    """
    return (user.password_changed_at - _EPOCH) // timedelta(microseconds=1)
