"""Korean (ISO 2022 IR 149) and other character sets through QIDO-RS and
metadata: pydicom's charset files are stored, then names are searched with
UTF-8 in the query (dicomweb-client, and plain requests with the percent
encoding written by hand) and every decoded name is compared with pydicom's
decoding of the file.

argv: SPEC_JSON {"url": DICOMweb root, "files": [charset file names]}
prints {"stored": n, "korean": [file names whose charset is IR 149],
        "queries": {pattern: [file names found]}, "names_checked": n}"""

import sys
import urllib.parse


sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import CHARSET_FILES, authorized_session, check, client, emit, load, spec, stow, stow_outcome, value_of


def groups(name):
    """A pydicom PersonName as DICOM JSON's component groups."""
    out = {}
    for key, text in (("Alphabetic", name.alphabetic), ("Ideographic", name.ideographic),
                      ("Phonetic", name.phonetic)):
        if text:
            out[key] = text
    return out


def main():
    options = spec()
    url = options["url"]
    dw = client(url)
    # The files as they are: their own UIDs, their own character sets.
    datasets = {name: load(name, directory=CHARSET_FILES, unique=False) for name in options["files"]}
    response, _ = stow(dw, list(datasets.values()))
    referenced, failed = stow_outcome(response)
    check(not failed, f"charset files failed: {failed}")
    korean = sorted(name for name, ds in datasets.items()
                    if "ISO 2022 IR 149" in list(ds.get("SpecificCharacterSet", [])))
    check(len(korean) >= 2, f"pydicom has fewer Korean files than expected: {korean}")
    # Files sharing a SOP Instance UID (chrFren and chrFrenMulti): the first is kept.
    kept = {}
    for name, ds in datasets.items():
        kept.setdefault(str(ds.SOPInstanceUID), name)
    by_study = {}
    for uid, name in kept.items():
        by_study.setdefault(str(datasets[name].StudyInstanceUID), name)

    def found_names(matches):
        names = []
        for match in matches:
            study = value_of(match, "StudyInstanceUID")
            check(study in by_study, f"a match names an unknown study {study}")
            name = by_study[study]
            # The name as decoded by the archive equals pydicom's decoding of the file.
            wanted = groups(datasets[name].PatientName)
            check(value_of(match, "PatientName") == wanted,
                  f"{name}: PatientName {value_of(match, 'PatientName')} != {wanted}")
            names.append(name)
        return sorted(names)

    queries = {}
    for pattern in ("김*", "홍*", "洪*", "Hong*", "Hong^Gildong=洪^吉洞=홍^길동", "*희*", "山田*", "Wang^*"):
        wanted = sorted({by_study[str(datasets[n].StudyInstanceUID)] for n in kept.values()
                         if matches_pattern(pattern, datasets[n].PatientName)})
        got = found_names(dw.search_for_studies(search_filters={"PatientName": pattern}))
        check(got == wanted, f"PatientName={pattern}: found {got}, wanted {wanted}")
        check(got, f"PatientName={pattern} matches nothing, so it proves nothing")
        queries[pattern] = got
    # Exactly the Korean studies whose name starts with 김.
    check(all(n in korean for n in queries["김*"]), f"김* found non-Korean files: {queries['김*']}")

    # The same with plain requests and hand-written percent encoding (UTF-8).
    encoded = "%EA%B9%80*"
    check(urllib.parse.unquote(encoded) == "김*", "the hand-written encoding is not 김*")
    answer = authorized_session().get(f"{url}/studies?PatientName={encoded}&includefield=PatientName",
                          headers={"Accept": "application/dicom+json"})
    check(answer.status_code == 200, f"GET with %-encoding: {answer.status_code} {answer.text[:200]}")
    check(answer.headers.get("Content-Type", "").startswith("application/dicom+json"), "content type")
    check(found_names(answer.json()) == queries["김*"], "plain GET with %-encoded 김* differs from dicomweb-client")
    # Lower-case hex digits and an encoded wildcard decode the same.
    answer = authorized_session().get(f"{url}/studies?PatientName=%ea%b9%80%2A")
    check(answer.status_code == 200 and found_names(answer.json()) == queries["김*"], "lower-case %-encoding")

    # Metadata of every kept file: each text attribute decoded as pydicom does.
    checked = 0
    for uid, name in kept.items():
        ds = datasets[name]
        md = dw.retrieve_instance_metadata(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), uid)
        for element in ds:
            if element.VR not in ("PN", "LO", "SH", "ST", "LT", "UT", "UC") or element.value in (None, ""):
                continue
            # A private element stored as UN (chrKoreanMulti.dcm) stays UN:
            # pydicom gives it its private dictionary's VR, the archive must not.
            if element.tag.is_private:
                continue
            entry = md.get(f"{element.tag:08X}")
            check(entry is not None, f"{name}: metadata lacks {element.keyword}")
            if element.VR == "PN":
                values = element.value if element.VM > 1 else [element.value]
                wanted = [groups(v) for v in values]
            else:
                values = element.value if element.VM > 1 else [element.value]
                wanted = [str(v).rstrip(" ") for v in values]
            got = entry.get("Value", [])
            if element.VR != "PN":
                got = [str(v).rstrip(" ") for v in got]
            check(got == wanted, f"{name} {element.keyword}: metadata {got} != pydicom {wanted}")
            checked += 1
    emit({"stored": len(referenced), "korean": korean, "queries": queries, "names_checked": checked})


def matches_pattern(pattern, name):
    """The archive's person name matching: a pattern without '=' matches any
    component group; with '=', group by group; case-insensitive."""
    import fnmatch

    def norm(text):
        return text.rstrip("^ ").upper()

    groups_of_name = [name.alphabetic, name.ideographic, name.phonetic]
    if "=" not in pattern:
        return any(g and fnmatch.fnmatchcase(norm(g), norm(pattern)) for g in groups_of_name)
    wanted = pattern.split("=")
    return all(not w or (i < 3 and groups_of_name[i] and fnmatch.fnmatchcase(norm(groups_of_name[i]), norm(w)))
               for i, w in enumerate(wanted))


main()
