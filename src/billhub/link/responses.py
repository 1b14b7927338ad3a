"""Building responses by the echo rules of LINK-SPEC 1, and the match key.

The single owner of both rules, so that the link, the pipeline and the switch
simulator answer and match in exactly one way.
"""

from __future__ import annotations

from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules

MatchKey = tuple[str, str, str, str]


def make_response(rules: LinkRules, request: Message, code: str) -> Message:
    """A response to ``request`` carrying ``code`` in DE 39 and every field it must echo."""
    plan = rules.response_plan(request.mti)
    f = request.fields
    out = {n: f[n] for n in plan.echo if n in f}
    amount = f.get(4)
    if amount is not None and f.get(3) not in plan.amount_except:
        out[4] = amount
    out[39] = code
    return Message.adopt(plan.mti, out)


def match_key(rules: LinkRules, msg: Message) -> MatchKey:
    """MTI class + DE 7 + DE 11 (+ DE 32 where present): how a response finds its request."""
    f = msg.fields
    optional = "".join(f.get(n, "") for n in rules.match_optional_fields)
    return (msg.mti[:2], f.get(7, ""), f.get(11, ""), optional)
