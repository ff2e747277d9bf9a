"""The REST API next to DICOMweb, after a STOW-RS of the broad set by
dicomweb-client: /api/status and /api/statistics count what was stored,
/api/aes lists our AE and the configured peers, /api/openapi.json describes
every path used; DELETE of a series removes it: WADO-RS, WADO-URI and
metadata answer 404, QIDO-RS no longer lists it (the rest of its study stays),
the counts drop, and a second DELETE is a 404.

argv: SPEC_JSON {"url": DICOMweb root, "http": HTTP root, "ae_title": ours,
                 "dicom_port": n, "known": a configured AE title, "files": [...]}
prints {"studies_before": n, "studies_after": n, "instances_before": n,
        "instances_after": n, "removed": n}"""

import sys


sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import authorized_session, check, client, emit, spec, stow_broad_set, value_of


def main():
    options = spec()
    url, http = options["url"], options["http"]
    dw = client(url)
    session = authorized_session()
    stored = stow_broad_set(dw, options["files"])
    datasets = [ds for ds, _ in stored.values()]
    studies = {str(d.StudyInstanceUID) for d in datasets}
    series = {str(d.SeriesInstanceUID) for d in datasets}

    def json_of(path, method="GET"):
        answer = session.request(method, f"{http}{path}")
        check(answer.headers.get("Content-Type", "").startswith("application/json"),
              f"{method} {path}: Content-Type {answer.headers.get('Content-Type')!r}")
        return answer.status_code, answer.json()

    status, body = json_of("/api/status")
    check(status == 200 and body.get("status") == "ok", f"/api/status: {status} {body}")
    check(body.get("ae_title") == options["ae_title"] and body.get("dicom_port") == options["dicom_port"],
          f"/api/status names {body.get('ae_title')}:{body.get('dicom_port')}")
    status, before = json_of("/api/statistics")
    check(status == 200, f"/api/statistics: {status}")
    check((before["studies"], before["series"], before["instances"]) == (len(studies), len(series), len(datasets)),
          f"/api/statistics counts {before['studies']}/{before['series']}/{before['instances']}, stored "
          f"{len(studies)}/{len(series)}/{len(datasets)}")
    check(before["ingest"]["instances_since_start"] == len(datasets), f"ingest counter {before['ingest']}")

    status, aes = json_of("/api/aes")
    check(status == 200 and aes.get("ae_title") == options["ae_title"], f"/api/aes: {aes}")
    check([ae.get("title") for ae in aes.get("known", [])] == [options["known"]], f"/api/aes known: {aes}")

    status, openapi = json_of("/api/openapi.json")
    for path in ("/api/status", "/api/statistics", "/api/aes", "/api/series/{series}", "/wado"):
        check(path in openapi.get("paths", {}), f"openapi.json lacks {path}")

    # Delete a series of a study that has another series, so the study stays.
    by_study = {}
    for ds in datasets:
        by_study.setdefault(str(ds.StudyInstanceUID), {}).setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    study, members = next((s, m) for s, m in sorted(by_study.items()) if len(m) > 1)
    victim, kept = sorted(members)[:2]
    removed_instances = members[victim]
    status, body = json_of(f"/api/series/{victim}", "DELETE")
    check(status == 200 and body.get("removed_instances") == len(removed_instances), f"DELETE series: {status} {body}")

    for ds in removed_instances:
        resource = f"{url}/studies/{study}/series/{victim}/instances/{ds.SOPInstanceUID}"
        for what, accept in ((resource, "application/dicom; transfer-syntax=*"),
                             (f"{resource}/metadata", "application/dicom+json"),
                             (f"{url}/studies/{study}/series/{victim}", 'multipart/related; type="application/dicom"')):
            answer = session.get(what, headers={"Accept": accept})
            check(answer.status_code == 404, f"GET {what} after DELETE: {answer.status_code}")
        answer = session.get(f"{http}/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": victim,
                                                     "objectUID": str(ds.SOPInstanceUID),
                                                     "contentType": "application/dicom"})
        check(answer.status_code == 404, f"WADO-URI after DELETE: {answer.status_code}")
        check(not dw.search_for_instances(search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)}),
              f"QIDO-RS still finds {ds.SOPInstanceUID}")
    listed = [value_of(m, "SeriesInstanceUID") for m in dw.search_for_series(study_instance_uid=study)]
    check(victim not in listed and kept in listed, f"series of study {study} after DELETE: {listed}")
    match = dw.search_for_studies(search_filters={"StudyInstanceUID": study})
    remaining = sum(len(v) for k, v in members.items() if k != victim)
    check(len(match) == 1 and value_of(match[0], "NumberOfStudyRelatedInstances") == remaining,
          f"study {study} after DELETE: {match}")

    status, after = json_of("/api/statistics")
    check(after["series"] == before["series"] - 1 and after["studies"] == before["studies"]
          and after["instances"] == before["instances"] - len(removed_instances), f"statistics after DELETE: {after}")
    status, body = json_of(f"/api/series/{victim}", "DELETE")
    check(status == 404 and body.get("error"), f"second DELETE: {status} {body}")
    status, body = json_of("/api/instances/1.2.3.999", "DELETE")
    check(status == 404, f"DELETE of an unknown instance: {status}")
    emit({"studies_before": before["studies"], "studies_after": after["studies"],
          "instances_before": before["instances"], "instances_after": after["instances"],
          "removed": len(removed_instances)})


main()
