"""Tweet normalisation as Twitter sentiment models expect it: mentions -> ``@user``, links -> ``http``.

This is the preprocessing the Twitter-trained text classifiers (e.g. the TweetEval/cardiffnlp models Serra
et al. use as teachers) were trained with; VADER is unaffected by it except that handles and URLs no longer
carry accidental lexicon words. Whitespace runs collapse to one space; case and emoji are kept (both carry
sentiment for VADER).
"""

from __future__ import annotations

import re

MENTION = re.compile(r"(?<![\w@])@\w{1,50}")
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """``@someone`` -> ``@user``, ``https://t.co/x`` or ``www.x.y`` -> ``http``, whitespace collapsed."""
    text = URL.sub("http", text)
    text = MENTION.sub("@user", text)
    return SPACE.sub(" ", text).strip()
