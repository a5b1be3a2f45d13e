#!/usr/bin/env python3
"""Writes tests/fixtures/scoring/dates.jsonl: the `date` strategy of the reference's free-form
answer scoring (dateutil 2.9 `parser.parse(text, fuzzy=False)` on the answer's `lower` form, then
the year / month / day the text shows) over date-like and non-date answers, for rmas's own reader
(crates/rmas-text/src/scoring/date.rs) to reproduce. Needs `pip install python-dateutil`.

    python3 tests/scoring_dates.py
"""
import json
import pathlib
import re

from dateutil import parser

MONTHS = "january|jan|february|feb|march|mar|april|apr|may|june|jun|july|jul|august|aug|september|sep|october|oct|november|nov|december|dec"


def lower_form(text):
    text = text.strip().lower().replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"[\u2010-\u2015]", "-", text)
    return re.sub(r"\s+", " ", text).strip()


def date_form(text):
    text = lower_form(text)
    if not text:
        return ""
    text = re.sub(r"\b(\d{1,2})(st|nd|rd|th)\b", r"\1", text)
    has_year = bool(re.search(r"\b\d{4}\b", text))
    has_month = bool(re.search(rf"\b({MONTHS})\b", text) or re.search(r"\b\d{1,2}[/-]\d{1,2}(?:[/-]\d{2,4})?\b", text))
    if not (has_year or has_month):
        return ""
    try:
        parsed = parser.parse(text, fuzzy=False, default=None)
    except Exception:
        return ""
    has_day = bool(re.search(r"\b\d{1,2}(st|nd|rd|th)?\b", text) and has_month)
    if has_year and has_month and has_day:
        return parsed.strftime("%Y-%m-%d")
    if has_year and has_month:
        return parsed.strftime("%Y-%m")
    if has_year:
        return parsed.strftime("%Y")
    return ""


TEXTS = [
    "July 4, 1776", "4 July 1776", "1776-07-04", "March 2020", "2020", "07/04/1776", "12/25/2020",
    "25/12/2020", "2020/12/25", "12-25-2020", "25-12-2020", "2020-3-4", "3-4-2020", "13-4-2020",
    "4 13 2020", "2020 13 4", "20 2020 july", "july 1776 4", "1776 july 4", "4 1776 july",
    "Monday, July 4, 1776", "jul. 4, 1776", "Sept 2020", "sep 9 2021", "4th of July, 1776",
    "the 4th of July 1776", "July 4th, 1776", "1st january 2000", "January 1st 2000",
    "December 31 1999", "February 29, 2020", "February 30, 2020", "Feb 29 2021", "April 31 2020",
    "17760704", "20200101", "1999.12.31", "31.12.1999", "12.31.1999", "2020-03", "03/2020",
    "10:30 july 4 1776", "july 4 1776 10:30", "july 4 1776 at 5 pm", "5pm july 4 1776",
    "The Eiffel Tower", "36", "1250", "1,250", "-4", "1776", "in 1776", "year 1776", "1776 AD",
    "july", "may 2020", "may", "May 5", "5 may", "2020 may 5", "may the 4th 2020", "march 2020 and",
    "2020 and 2021", "1999-2000", "2000s", "1990 1991", "1 2 3 4", "12 2020", "2020 12",
    "nov 2019", "october 15, 1582", "the year 2000", "2000 years", "june 6 1944 on", "June 6, 1944.",
    "6.6.1944", "6/6/44", "44", "999", "0999", "12/31/1999 11:59 pm", "Jan 1 2000 UTC",
    "july 4 – 1776", "july  4 ,  1776", "4/7", "30 feb 2020", "2020 feb 30", "aug 2 1990 aug",
]


def main():
    out = pathlib.Path(__file__).parent / "fixtures/scoring/dates.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for text in TEXTS:
            f.write(json.dumps({"text": text, "date": date_form(text)}, ensure_ascii=False) + "\n")
    print(f"wrote {len(TEXTS)} cases to {out}")


if __name__ == "__main__":
    main()
