"""The sources the study cites, named as a reader knows them (authors, title, venue, year, link).

The first six are the documents the study starts from (the LWTA paper, the Paris-Dauphine student
study, the WCA paper, the k-WTA paper and its course reproduction, the Sparta paper); the others
are the papers behind the other defenses and the evaluation protocol. Claims (``claims.yaml``)
name their source by id; :func:`cite` renders an id as "Authors (year), Title", :func:`short` as
"Authors (year)", :func:`render_sources` every id inside a free text, and
:func:`references_markdown` the report's references section.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lwta_utils.core.errors import bad


@dataclass(frozen=True)
class Source:
    id: str
    authors: tuple[str, ...]
    title: str
    venue: str
    year: int | None
    link: str = ""          # public address ('' when none is public)
    starting: bool = False  # one of the documents the study starts from
    note: str = ""          # what the study takes from it

    def names(self) -> str:
        """'Xiao, Zhong & Zheng', 'Guo et al.' (surnames; four or more authors, or a list ending in
        'et al.': the first et al.; an author that is not a person, e.g. "The study's technical
        notes", as written)."""
        if len(self.authors) == 1 and self.year is None:
            return self.authors[0]
        last = [a.split()[-1] for a in self.authors]
        if len(last) == 1:
            return last[0]
        if len(last) >= 4 or self.authors[-1] == "et al.":
            return f"{last[0]} et al."
        return ", ".join(last[:-1]) + " & " + last[-1]

    def short(self) -> str:
        return self.names() if self.year is None else f"{self.names()} ({self.year})"

    def cite(self) -> str:
        return f"{self.short()}, {self.title}"

    def reference(self) -> str:
        """One Markdown line of the references section."""
        link = f" <{self.link}>" if self.link else " (not public)"
        when = "" if self.year is None else f", {self.year}"
        authors = ", ".join(self.authors).replace(", et al.", " et al.")
        return f"{authors.rstrip('.')}. **{self.title}**. {self.venue}{when}.{link}"


SOURCES: dict[str, Source] = {s.id: s for s in (
    Source("lwta_paper", ("Konstantinos P. Panousis", "Sotirios Chatzis", "Sergios Theodoridis"),
           "Stochastic Local Winner-Takes-All Networks Enable Profound Adversarial Robustness",
           "arXiv:2112.02671", 2021, "https://arxiv.org/abs/2112.02671", True,
           "the stochastic LWTA defense and its CIFAR-10 robustness claims"),
    Source("lwta_code", ("Konstantinos P. Panousis",), "Adversarial-LWTA-AutoAttack: code and released checkpoint of "
           "the LWTA paper", "GitHub repository", 2021, "https://github.com/konpanousis/Adversarial-LWTA-AutoAttack",
           False, "the layer, the training recipe and the WRN-34-1 checkpoint evaluated at paper scale"),
    Source("dauphine_study", ("Othman Hicheur", "Constant Bourdrez", "Marc Kaspar"),
           "Training robust neural networks: Stochastic Local Winner Takes It All",
           "Student study, Université Paris-Dauphine – PSL", 2024, "", True,
           "mixed adversarial training, noise injection, its results table and figures (slides, December 2024)"),
    Source("wca_paper", ("Panagiotis Eustratiadis", "Henry Gouk", "Da Li", "Timothy Hospedales"),
           "Weight-Covariance Alignment for Adversarially Robust Neural Networks",
           "ICML (arXiv:2010.08852)", 2021, "https://arxiv.org/abs/2010.08852", True, "the WCA defense"),
    Source("kwta_paper", ("Chang Xiao", "Peilin Zhong", "Changxi Zheng"),
           "Enhancing Adversarial Defense by k-Winners-Take-All", "ICLR (arXiv:1905.10510)", 2020,
           "https://arxiv.org/abs/1905.10510", True, "the k-WTA defense"),
    Source("kwta_reproduction", ("Baran Usluel", "Ilya Golod"),
           "Resisting Adversarial Attacks by k-Winners-Take-All (a reproduction of Xiao, Zhong & Zheng)",
           "Course project, CS4803/7643 Deep Learning (spring term)", 2020,
           "https://github.com/baranusluel/kWTA-activation", True, "k-WTA's white-box gains and its time overhead"),
    Source("sparta_paper", ("Qing Guo", "et al."), "Sparta: Spatially Attentive and Adversarially Robust Activation",
           "arXiv:2105.08269", 2021, "https://arxiv.org/abs/2105.08269", True,
           "the Sparta activation (no public code: reconstructed here)"),
    Source("pni_paper", ("Zhezhi He", "Adnan Siraj Rakin", "Deliang Fan"),
           "Parametric Noise Injection: Trainable Randomness to Improve Deep Neural Network Robustness against "
           "Adversarial Attack", "CVPR (arXiv:1811.09310)", 2019, "https://arxiv.org/abs/1811.09310", False,
           "the PNI defense and its recipe"),
    Source("ibp_paper", ("Konstantinos P. Panousis", "Sotirios Chatzis", "Sergios Theodoridis"),
           "Nonparametric Bayesian Deep Networks with Local Competition", "ICML (arXiv:1805.07624)", 2019,
           "https://arxiv.org/abs/1805.07624", False, "the IBP / stick-breaking variant of LWTA"),
    Source("madry_at", ("Aleksander Madry", "Aleksandar Makelov", "Ludwig Schmidt", "Dimitris Tsipras",
                        "Adrian Vladu"), "Towards Deep Learning Models Resistant to Adversarial Attacks",
           "ICLR (arXiv:1706.06083)", 2018, "https://arxiv.org/abs/1706.06083", False,
           "PGD and PGD adversarial training"),
    Source("adaptive_attacks", ("Florian Tramèr", "Nicholas Carlini", "Wieland Brendel", "Aleksander Madry"),
           "On Adaptive Attacks to Adversarial Example Defenses", "NeurIPS (arXiv:2002.08347)", 2020,
           "https://arxiv.org/abs/2002.08347", False, "the gradient-free smoothed attack that breaks k-WTA"),
    Source("obfuscated_gradients", ("Anish Athalye", "Nicholas Carlini", "David Wagner"),
           "Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to Adversarial Examples",
           "ICML (arXiv:1802.00420)", 2018, "https://arxiv.org/abs/1802.00420", False,
           "straight-through (BPDA) gradients and EOT"),
    Source("autoattack", ("Francesco Croce", "Matthias Hein"),
           "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
           "ICML (arXiv:2003.01690)", 2020, "https://arxiv.org/abs/2003.01690", False, "AutoAttack"),
    Source("robustbench", ("Francesco Croce", "Maksym Andriushchenko", "Vikash Sehwag", "Edoardo Debenedetti",
                           "Nicolas Flammarion", "Mung Chiang", "Prateek Mittal", "Matthias Hein"),
           "RobustBench: a standardized adversarial robustness benchmark",
           "NeurIPS Datasets and Benchmarks (arXiv:2010.09670)", 2021, "https://arxiv.org/abs/2010.09670",
           False, "the leaderboard's ReLU PGD-AT range and the format of the per-model entries"),
    Source("evaluating_robustness", ("Nicholas Carlini", "Anish Athalye", "Nicolas Papernot", "Wieland Brendel",
                                     "Jonas Rauber", "Dimitris Tsipras", "Ian Goodfellow", "Aleksander Madry",
                                     "Alexey Kurakin"), "On Evaluating Adversarial Robustness", "arXiv:1902.06705",
           2019, "https://arxiv.org/abs/1902.06705", False, "the sanity checks of the evaluation"),
    Source("study_notes", ("The study's technical notes",), "The defenses as their authors' code defines them, and "
           "first measurements on the released LWTA checkpoint", "Kept with the study's sources", None, "", False,
           "the claims it measured first, re-measured here"),
)}


# How the documents the study starts from were first called inside the project; still read so
# that older claim files render, never written.
_INTERNAL = {"000": "lwta_paper", "001": "dauphine_study", "002": "wca_paper", "003": "kwta_reproduction",
             "004": "sparta_paper"}
_INTERNAL_RE = re.compile(r"\bseed (00\d)('s)?\b", re.I)
_ID_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SOURCES), key=len, reverse=True)) + r")\b")


def source(sid: str) -> Source:
    if sid not in SOURCES:
        raise bad("source", sid, f"choose from {', '.join(SOURCES)}")
    return SOURCES[sid]


def cite(sid: str) -> str:
    """'Panousis, Chatzis & Theodoridis (2021), Stochastic Local Winner-Takes-All Networks ...'."""
    return source(sid).cite()


def short(sid: str) -> str:
    """'Panousis, Chatzis & Theodoridis (2021)'."""
    return source(sid).short()


def source_ids(text: str) -> list[str]:
    """The ids of the sources a text names (ids, or the project's first internal names)."""
    found = [m.group(1) for m in _ID_RE.finditer(text or "")]
    found += [_INTERNAL[m.group(1)] for m in _INTERNAL_RE.finditer(text or "") if m.group(1) in _INTERNAL]
    return list(dict.fromkeys(found))


def render_sources(text: str, full: bool = True) -> str:
    """``text`` with every source id replaced by its citation (``full``: "Authors (year), Title";
    else "Authors (year)"); the rest of the text is kept."""
    text = _INTERNAL_RE.sub(lambda m: _INTERNAL.get(m.group(1), m.group(0)) + (m.group(2) or ""), text or "")
    return _ID_RE.sub(lambda m: SOURCES[m.group(1)].cite() if full else SOURCES[m.group(1)].short(), text)


def references_markdown(ids: list[str] | None = None) -> str:
    """The references section: the documents the study starts from, then the others (or ``ids``)."""
    chosen = [SOURCES[i] for i in ids] if ids is not None else list(SOURCES.values())
    first = [s for s in chosen if s.starting]
    rest = [s for s in chosen if not s.starting]
    lines = []
    if first:
        lines += ["The documents this study starts from:", ""] + [_line(s) for s in first]
    if rest:
        lines += ["", "Other work the study uses:", ""] + [_line(s) for s in rest]
    return "\n".join(lines).strip()


def _line(s: Source) -> str:
    return f"- {s.reference()} The study takes {s.note}." if s.note else f"- {s.reference()}"


def references():
    """The references section as rendered Markdown (for a notebook)."""
    from IPython.display import Markdown

    return Markdown(references_markdown())
