"""The C{agw-import-arm} command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


from agwtx.tools.armimport.convert import DEFAULT_TLS_DIR, PROG, convert
from agwtx.tools.armimport.read import ArmImportError, _get, loadJson


def _suppliedParameters(data: Any) -> dict[str, Any]:
    """Values from an ARM parameters file (C{{"parameters": {"x": {"value": ...}}}})."""
    if not isinstance(data, dict):
        raise ArmImportError("the parameters file is not a JSON object")
    params = _get(data, "parameters")
    if not isinstance(params, dict):
        params = data
    values: dict[str, Any] = {}
    for name, entry in params.items():
        if name.startswith("$"):
            continue
        # A Key Vault reference ({"reference": ...}) is kept whole: see ArmEvaluator.parameter.
        values[name] = entry["value"] if isinstance(entry, dict) and "value" in entry else entry
    return values


def _readSource(path: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        raise ArmImportError(f"cannot read the file: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ArmImportError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise ArmImportError("the input is empty")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{agw-import-arm} command: convert, write the INI text to standard
    output (or C{-o FILE}); problems go to standard error with exit status 1.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Convert an Azure Application Gateway (ARM template, or the JSON of "
            "'az network application-gateway show') to agw's INI configuration."
        ),
    )
    parser.add_argument("input", help="the JSON file, or - for standard input")
    parser.add_argument(
        "--tls-dir",
        default=DEFAULT_TLS_DIR,
        help=f"where certificate placeholders point (default {DEFAULT_TLS_DIR})",
    )
    parser.add_argument(
        "-p",
        "--parameters",
        metavar="FILE",
        help="an ARM parameters file whose values override the template's defaultValues",
    )
    parser.add_argument("--gateway", metavar="NAME", help="which gateway, when the input holds several")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    args = parser.parse_args(argv)
    source = "<stdin>" if args.input == "-" else args.input
    try:
        data, lenient = loadJson(_readSource(args.input))
        parameters: dict[str, Any] = {}
        if args.parameters:
            try:
                paramData, _ = loadJson(_readSource(args.parameters))
            except ArmImportError as e:
                raise ArmImportError(f"the parameters file {args.parameters}: {e}") from None
            parameters = _suppliedParameters(paramData)
        text = convert(
            data,
            source,
            tlsDir=args.tls_dir,
            gateway=args.gateway,
            parameters=parameters,
            lenient=lenient,
        )
        if args.output:
            try:
                with open(args.output, "w", encoding="utf-8") as f:
                    f.write(text)
            except OSError as e:
                raise ArmImportError(f"cannot write {args.output}: {e.strerror or e}") from None
        else:
            sys.stdout.write(text)
    except ArmImportError as e:
        print(f"{PROG}: error: {source}: {e}", file=sys.stderr)
        return 1
    except RecursionError:
        print(f"{PROG}: error: {source}: the input is nested too deeply", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
