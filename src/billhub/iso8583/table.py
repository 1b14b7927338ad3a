"""The human-readable field table, generated from the spec file so the two never drift."""

from __future__ import annotations

from billhub.iso8583.spec import LinkSpec


def field_table(spec: LinkSpec) -> str:
    """Markdown: fields, then the message rules, as an interface document shows them."""
    lines = [
        f"# {spec.name}, version {spec.version}: field table",
        "",
        f"Generated from `{spec.source}` by `billhub spec table`; do not edit by hand.",
        "",
        f"Framing: {spec.length_header}-byte big-endian length header; "
        f"messages of 1 to {spec.max_message_length} bytes. Currency {spec.currency} "
        f"(exponent {spec.currency_exponent}).",
        "",
        "| DE | name | format | encoding | rule |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, f in spec.fields.items():
        label = {"t": "MTI", "p": "bitmap 1", "1": "bitmap 2"}.get(key, key)
        rule = "`" + f.pattern.replace("|", "\\|") + "`" if f.pattern else ""
        lines.append(f"| {label} | {f.name} | {f.describe()} | {f.encoding} | {rule} |")
    r = spec.rules
    lines += [
        "",
        "## Responses",
        "",
        "| request MTI | response MTI |",
        "| --- | --- |",
    ]
    lines += [f"| {req} | {resp} |" for req, resp in r.responses.items()]
    lines += [
        "",
        "Any other request MTI is answered with its third digit + 1 and the repeat digit "
        "cleared, DE 39 `12`.",
        "",
        "## Echo",
        "",
        "A response carries unchanged every one of DE "
        + ", ".join(str(n) for n in r.echo)
        + " that its request carried; DE 4 too, except for processing code(s) "
        + ", ".join(f"`{c}`" for c in sorted(r.echo_amount_except))
        + ".",
        "",
        "Matching: MTI class + DE "
        + " + DE ".join(str(n) for n in r.match_fields)
        + (" (+ DE " + ", ".join(str(n) for n in r.match_optional_fields) + " where present)")
        * bool(r.match_optional_fields)
        + ".",
        "",
        "## Mandatory fields",
        "",
        "| MTI | when | fields |",
        "| --- | --- | --- |",
    ]
    for m in r.mandatory:
        when = []
        if m.processing_code:
            when.append(f"DE 3 = {m.processing_code}")
        if m.network_code:
            when.append(f"DE 70 = {m.network_code}")
        lines.append(
            f"| {', '.join(sorted(m.mtis))} | {' and '.join(when) or 'always'} | "
            f"{', '.join(str(n) for n in m.fields)} |"
        )
    lines += ["", "## Codes", "", "| field | code | meaning |", "| --- | --- | --- |"]
    lines += [f"| DE 3 | `{c}` | {v} |" for c, v in r.processing_codes.items()]
    lines += [f"| DE 70 | `{c}` | {v} |" for c, v in r.network_codes.items()]
    return "\n".join(lines) + "\n"
