"""Preference records (a strategy's own ``chosen``/``rejected``, :data:`PREFERENCE_OUTPUTS`) are
DPO pairs as they are, beside the pairs made from accepted and rejected candidates of one prompt."""

from __future__ import annotations

from distillery.records import PREFERENCE_OUTPUTS, add_verdict, new_record
from distillery.train.data import dpo_pairs


def _rec(rid: str, prompt: str, response: str, accepted: bool = True, **extra) -> dict:
    r = new_record(id=rid, seed_id=rid.split("#")[0], prompt=[{"role": "user", "content": prompt}], response=response)
    r.update(extra)  # a strategy's outputs sit beside the record fields
    if not accepted:
        add_verdict(r, "verify", "math_answer", False, {"reason": "wrong_answer: 3 != 4"})
    return r


def test_records_with_their_own_pair_are_taken_as_they_are():
    assert set(PREFERENCE_OUTPUTS) == {"chosen", "rejected"}
    pair = _rec("p#0", "Explain tides.", "The moon pulls the sea.",
                chosen=[{"role": "assistant", "content": "The moon pulls the sea."}],
                rejected=[{"role": "assistant", "content": "Wind."}])
    good, bad = _rec("q#0", "2+2?", "4"), _rec("q#1", "2+2?", "3", accepted=False)
    pairs, stats = dpo_pairs([pair, good], [bad])
    assert pairs == [
        {"prompt": [{"role": "user", "content": "Explain tides."}],
         "chosen": [{"role": "assistant", "content": "The moon pulls the sea."}],
         "rejected": [{"role": "assistant", "content": "Wind."}]},
        {"prompt": [{"role": "user", "content": "2+2?"}],
         "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "3"}]},
    ]
    assert stats.pairs == 2 and stats.prompts_with_pairs == 2 and stats.prompts_with_accepted == 2
