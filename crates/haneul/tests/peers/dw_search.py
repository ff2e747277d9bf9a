"""QIDO-RS with dicomweb-client at every level, checked against what the
stored files say: all studies/series/instances, nested resources, filters
(PatientName wildcard, StudyDate ranges, ModalitiesInStudy, UID lists,
attributes of other levels), includefield (tags, keywords, all),
limit/offset in a stable order and the computed count attributes.

argv: SPEC_JSON {"url": DICOMweb root, "files": [test file names]}
prints {"studies": n, "series": n, "instances": n, "checks": {name: n matches}}"""

import fnmatch
import sys
from collections import defaultdict

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import check, client, emit, fail, spec, stow_broad_set, value_of, values_of


def uids(matches, keyword):
    out = [value_of(m, keyword) for m in matches]
    check(all(out), f"a match has no {keyword}: {matches}")
    return out


def normalized_date(text):
    # ExplVR_BigEnd.dcm has the ACR-NEMA form 1997.04.24.
    return str(text or "").replace(".", "").strip()


def main():
    options = spec()
    dw = client(options["url"])
    stored = stow_broad_set(dw, options["files"])
    datasets = [ds for ds, _ in stored.values()]

    studies = defaultdict(list)
    series = defaultdict(list)
    for ds in datasets:
        studies[str(ds.StudyInstanceUID)].append(ds)
        series[str(ds.SeriesInstanceUID)].append(ds)
    checks = {}

    # Every level, everything.
    all_studies = dw.search_for_studies()
    check(sorted(uids(all_studies, "StudyInstanceUID")) == sorted(studies), "all studies")
    all_series = dw.search_for_series()
    check(sorted(uids(all_series, "SeriesInstanceUID")) == sorted(series), "all series")
    all_instances = dw.search_for_instances()
    check(sorted(uids(all_instances, "SOPInstanceUID")) == sorted(str(d.SOPInstanceUID) for d in datasets),
          "all instances")

    # Counts and Modalities in Study, computed by the archive.
    for match in all_studies:
        members = studies[value_of(match, "StudyInstanceUID")]
        check(value_of(match, "NumberOfStudyRelatedInstances") == len(members),
              f"NumberOfStudyRelatedInstances {value_of(match, 'NumberOfStudyRelatedInstances')} != {len(members)}")
        check(value_of(match, "NumberOfStudyRelatedSeries") == len({str(d.SeriesInstanceUID) for d in members}),
              "NumberOfStudyRelatedSeries")
        modalities = sorted({str(d.Modality) for d in members if d.get("Modality")})
        check(sorted(values_of(match, "ModalitiesInStudy")) == modalities,
              f"ModalitiesInStudy {values_of(match, 'ModalitiesInStudy')} != {modalities}")
        first = members[0]
        check(value_of(match, "PatientID") == (str(first.get("PatientID", "")) or None), "PatientID")
        if first.get("PatientName"):
            name = value_of(match, "PatientName")
            check(name and name.get("Alphabetic", "").rstrip("^") == str(first.PatientName).split("=")[0].rstrip("^"),
                  f"PatientName {name} != {first.PatientName}")
    for match in all_series:
        members = series[value_of(match, "SeriesInstanceUID")]
        check(value_of(match, "NumberOfSeriesRelatedInstances") == len(members), "NumberOfSeriesRelatedInstances")
        check(value_of(match, "Modality") == str(members[0].get("Modality", "")) or None, "Modality")
        check(value_of(match, "StudyInstanceUID") == str(members[0].StudyInstanceUID), "series' StudyInstanceUID")
    checks["counts"] = len(all_studies) + len(all_series)

    # Nested resources: a study's series and instances, a series' instances.
    for study, members in studies.items():
        nested = dw.search_for_series(study_instance_uid=study)
        check(sorted(uids(nested, "SeriesInstanceUID")) == sorted({str(d.SeriesInstanceUID) for d in members}),
              f"series of study {study}")
        nested = dw.search_for_instances(study_instance_uid=study)
        check(sorted(uids(nested, "SOPInstanceUID")) == sorted(str(d.SOPInstanceUID) for d in members),
              f"instances of study {study}")
    for uid, members in series.items():
        study = str(members[0].StudyInstanceUID)
        nested = dw.search_for_instances(study_instance_uid=study, series_instance_uid=uid)
        check(sorted(uids(nested, "SOPInstanceUID")) == sorted(str(d.SOPInstanceUID) for d in members),
              f"instances of series {uid}")
    checks["nested"] = len(studies) + len(series)

    def expect(found, keyword, wanted, what):
        got = sorted(uids(found, keyword))
        check(got == sorted(wanted), f"{what}: got {got}, wanted {sorted(wanted)}")
        check(len(wanted) > 0, f"{what}: the data has no match, so the check proves nothing")
        checks[what] = len(wanted)

    # Person name with a wildcard (names match case-insensitively).
    pattern = "compressedsamples^m*"
    wanted = {s for s, m in studies.items()
              if fnmatch.fnmatchcase(str(m[0].get("PatientName", "")).upper(), pattern.upper())}
    expect(dw.search_for_studies(search_filters={"PatientName": pattern}), "StudyInstanceUID", wanted, "PatientName")
    # ? matches one character.
    wanted = {s for s, m in studies.items() if str(m[0].get("PatientName", "")) == "Lestrade^G"}
    expect(dw.search_for_studies(search_filters={"PatientName": "Lestrade^?"}), "StudyInstanceUID", wanted,
           "PatientName ?")

    # Study Date: a closed range, an open start and an open end.
    dates = sorted({normalized_date(m[0].get("StudyDate")) for m in studies.values()} - {""})
    check(len(dates) >= 4, f"too few study dates: {dates}")
    low, high = dates[1], dates[-2]
    for text, test in ((f"{low}-{high}", lambda d: low <= d <= high),
                       (f"-{low}", lambda d: d <= low),
                       (f"{high}-", lambda d: d >= high),
                       (high, lambda d: d == high)):
        wanted = {s for s, m in studies.items() if normalized_date(m[0].get("StudyDate")) and
                  test(normalized_date(m[0].get("StudyDate")))}
        expect(dw.search_for_studies(search_filters={"StudyDate": text}), "StudyInstanceUID", wanted,
               f"StudyDate={text}")

    # Modalities in Study: a study with any series of the modality.
    for modality in ("MR", "OT", "SR"):
        wanted = {s for s, m in studies.items() if any(d.get("Modality") == modality for d in m)}
        expect(dw.search_for_studies(search_filters={"ModalitiesInStudy": modality}), "StudyInstanceUID", wanted,
               f"ModalitiesInStudy={modality}")

    # UID lists (comma-separated) at every level.
    some = sorted(studies)[:3]
    expect(dw.search_for_studies(search_filters={"StudyInstanceUID": ",".join(some)}), "StudyInstanceUID", some,
           "StudyInstanceUID list")
    some = sorted(series)[:2]
    expect(dw.search_for_series(search_filters={"SeriesInstanceUID": ",".join(some)}), "SeriesInstanceUID", some,
           "SeriesInstanceUID list")
    some = sorted(str(d.SOPInstanceUID) for d in datasets)[:5]
    expect(dw.search_for_instances(search_filters={"SOPInstanceUID": ",".join(some)}), "SOPInstanceUID", some,
           "SOPInstanceUID list")

    # Instances filtered by attributes of their series and study.
    wanted = [str(d.SOPInstanceUID) for d in datasets if d.get("Modality") == "OT"]
    expect(dw.search_for_instances(search_filters={"Modality": "OT"}), "SOPInstanceUID", wanted, "instances Modality")
    wanted = [str(d.SOPInstanceUID) for d in datasets if str(d.get("PatientID", "")) == "ID1"]
    expect(dw.search_for_instances(search_filters={"PatientID": "ID1"}), "SOPInstanceUID", wanted,
           "instances PatientID")
    wanted = [str(d.SeriesInstanceUID) for d in datasets if str(d.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.481.2"]
    expect(dw.search_for_series(search_filters={"Modality": "RTDOSE"}), "SeriesInstanceUID", set(wanted),
           "series Modality")

    # includefield by tag and by keyword, and all.
    ct = next(d for d in datasets if d.get("PatientAge") and d.Modality == "CT")
    found = dw.search_for_studies(search_filters={"StudyInstanceUID": str(ct.StudyInstanceUID)},
                                  fields=["00101010", "PatientSex"])
    check(len(found) == 1 and value_of(found[0], "PatientAge") == str(ct.PatientAge)
          and value_of(found[0], "PatientSex") == str(ct.PatientSex), f"includefield at study level: {found}")
    found = dw.search_for_instances(search_filters={"SOPInstanceUID": str(ct.SOPInstanceUID)},
                                    fields=["SliceThickness", "00280030", "ImageType"])
    check(len(found) == 1, "includefield at instance level")
    check(abs(float(value_of(found[0], "SliceThickness")) - float(ct.SliceThickness)) < 1e-6, "SliceThickness")
    check([float(v) for v in values_of(found[0], "PixelSpacing")] == [float(v) for v in ct.PixelSpacing],
          "PixelSpacing")
    check(values_of(found[0], "ImageType") == list(ct.ImageType), f"ImageType {values_of(found[0], 'ImageType')}")
    without = dw.search_for_instances(search_filters={"SOPInstanceUID": str(ct.SOPInstanceUID)})
    check(value_of(without[0], "SliceThickness") is None, "SliceThickness is returned without includefield")
    found = dw.search_for_instances(search_filters={"SOPInstanceUID": str(ct.SOPInstanceUID)}, fields=["all"])
    check(len(found) == 1, "includefield=all")
    for element in ct:
        if element.VR in ("SQ", "OB", "OW", "UN") or element.tag.is_private or element.tag.group == 0xFFFC:
            continue
        if element.keyword in ("SpecificCharacterSet",) or element.value in (None, ""):
            continue
        if f"{element.tag:08X}" not in found[0]:
            fail(f"includefield=all misses {element.keyword}")
    checks["includefield=all"] = len(found[0])

    # limit and offset page through one stable order.
    everything = uids(dw.search_for_instances(), "SOPInstanceUID")
    check(everything == uids(dw.search_for_instances(), "SOPInstanceUID"), "two searches differ in order")
    pages = []
    for offset in range(0, len(everything) + 5, 5):
        page = uids(dw.search_for_instances(limit=5, offset=offset), "SOPInstanceUID")
        check(len(page) == max(0, min(5, len(everything) - offset)), f"page at {offset} has {len(page)}")
        pages.extend(page)
    check(pages == everything, "pages of 5 do not add up to the whole list in order")
    remaining = uids(dw.search_for_instances(limit=7, get_remaining=True), "SOPInstanceUID")
    check(remaining == everything, "get_remaining does not add up to the whole list")
    study_pages = uids(dw.search_for_studies(limit=2, offset=1), "StudyInstanceUID")
    check(study_pages == uids(all_studies, "StudyInstanceUID")[1:3], "studies limit=2 offset=1")
    checks["paging"] = len(pages)

    # Fuzzy matching of names (a prefix of any component, any case).
    wanted = {s for s, m in studies.items() if str(m[0].get("PatientName", "")).lower().startswith("lestrade")}
    expect(dw.search_for_studies(search_filters={"PatientName": "lestr"}, fuzzymatching=True), "StudyInstanceUID",
           wanted, "fuzzymatching")

    emit({"studies": len(all_studies), "series": len(all_series), "instances": len(all_instances), "checks": checks})


main()
