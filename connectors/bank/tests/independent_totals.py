#!/usr/bin/env python3
"""Independent cross-check of the sample totals asserted in tests/samples.rs.

Written separately from the Rust parser (plain line splitting, Python Decimal)
so a shared mistake is unlikely. Run: python3 connectors/bank/tests/independent_totals.py
"""
import pathlib
import re
import sys
import xml.etree.ElementTree as ET
from decimal import Decimal

SAMPLES = pathlib.Path(__file__).resolve().parents[4] / "shared" / "samples"


def decode_lines(raw: bytes):
    for line in re.split(rb"\r?\n", raw):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError:
            yield line.decode("cp1251")


def client_bank_exchange(path):
    lines = [l.strip() for l in decode_lines(path.read_bytes())]
    accounts = set()
    docs, sections, cur, section = [], [], None, None
    for l in lines:
        key, _, value = l.partition("=")
        if key == "СекцияДокумент":
            cur, section = {}, "doc"
        elif key == "СекцияРасчСчет":
            cur, section = {}, "acc"
        elif key == "КонецДокумента":
            docs.append(cur); section = None
        elif key == "КонецРасчСчет":
            sections.append(cur); accounts.add(cur.get("РасчСчет")); section = None
        elif section:
            cur[key.lower()] = value.strip()
        elif key == "РасчСчет":
            accounts.add(value.strip())
    out = {"documents": len(docs), "in": [0, Decimal(0)], "out": [0, Decimal(0)], "other": [0, Decimal(0)],
           "account_sections": len(sections), "accounts": len(accounts - {None, ""})}
    accounts -= {None, ""}
    for d in docs:
        amount = Decimal(d["сумма"])
        payer = d.get("плательщиксчет") or d.get("плательщикрасчсчет")
        payee = d.get("получательсчет") or d.get("получательрасчсчет")
        if payee in accounts and payer not in accounts:
            side = "in"
        elif payer in accounts and payee not in accounts:
            side = "out"
        elif payer in accounts and payee in accounts:
            side = "other"  # between own accounts
        elif len(accounts) == 1 and bool(d.get("датасписано")) != bool(d.get("датапоступило")):
            side = "out" if d.get("датасписано") else "in"  # direction by date
        else:
            side = "other"
        out[side][0] += 1
        out[side][1] += amount
    out["stated_in"] = sum((Decimal(s.get("всегопоступило") or 0) for s in sections), Decimal(0))
    out["stated_out"] = sum((Decimal(s.get("всегосписано") or 0) for s in sections), Decimal(0))
    return out


def camt(path):
    root = ET.parse(path).getroot()
    ns = root.tag.split("}")[0] + "}"
    out = {"statements": 0, "documents": 0, "in": [0, Decimal(0)], "out": [0, Decimal(0)]}
    for stmt in root.iter(ns + "Stmt"):
        out["statements"] += 1
        for ntry in stmt.findall(ns + "Ntry"):
            out["documents"] += 1
            side = "in" if ntry.find(ns + "CdtDbtInd").text == "CRDT" else "out"
            out[side][0] += 1
            out[side][1] += Decimal(ntry.find(ns + "Amt").text)
    return out


def mt940(path):
    out = {"documents": 0, "in": [0, Decimal(0)], "out": [0, Decimal(0)]}
    for line in path.read_text("utf-8").splitlines():
        m = re.match(r":61:\d{6}(\d{4})?(R?[CD])[A-Z]?([\d,]+)", line)
        if m:
            side = "in" if m.group(2).endswith("C") else "out"
            out["documents"] += 1
            out[side][0] += 1
            out[side][1] += Decimal(m.group(3).replace(",", "."))
    return out


for p in sorted(SAMPLES.iterdir()):
    if p.name.startswith("1c_"):
        print(p.name, client_bank_exchange(p))
    elif p.name.startswith("camt"):
        print(p.name, camt(p))
    elif p.suffix == ".sta":
        print(p.name, mt940(p))
sys.exit(0)
