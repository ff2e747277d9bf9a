"""A legacy PACS for migration tests: a pynetdicom Query/Retrieve SCP (Study
Root C-FIND, C-MOVE and C-GET) holding generated studies, which counts the
operations it serves at once.

argv: HOST PORT SPEC_JSON {"ae_title": str, "studies": int, "per_study": int,
   "destinations": {AE: [host, port]}, "send_delay": float (seconds per instance sent),
   "second_class": bool (every second instance of a study labelled CT Image Storage),
   "sop_classes_in_study": "true" | "partial" (what a STUDY-level C-FIND answers for
   SOP Classes in Study: every class of the study, or only its first instance's; left out: nothing),
   "hang_first_retrieve": float (seconds the first C-MOVE or C-GET stays silent, sending
   nothing, before it goes on; cut short when stdin closes)}
prints {"ready": true} once listening; when stdin closes, prints
{"most_operations_at_once": int, "finds": int, "moves": int, "gets": int,
 "class_listings": int (IMAGE-level C-FINDs that asked for SOP Class UID),
 "uid_listings": int (IMAGE-level C-FINDs that did not), "instances": int}
and exits."""

import sys
import threading
import time

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import evt
from pynetdicom.sop_class import (CTImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

sys.dont_write_bytecode = True  # importing pn_util must leave no __pycache__ in the tree
from pn_gen import build, uid_maker
from pn_util import emit, new_ae, spec


class Operations:
    """C-FINDs, C-MOVEs and C-GETs under way, and the most seen at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.listings = {"with classes": 0, "uids only": 0}
        self.started = {"find": 0, "move": 0, "get": 0}

    def begin(self, kind):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.started[kind] += 1

    def listed(self, with_classes):
        with self.lock:
            self.listings["with classes" if with_classes else "uids only"] += 1

    def end(self):
        with self.lock:
            self.now -= 1


def main():
    host, port, s = sys.argv[1], int(sys.argv[2]), spec()
    study_uid, series_uid, sop_uid = uid_maker(), uid_maker(), uid_maker()
    studies = {}
    for n in range(s["studies"]):
        instances = []
        for i in range(s["per_study"]):
            ds = build({"patient_name": f"Legacy^Patient{n}", "patient_id": f"LEG{n}"},
                       study_uid(n), series_uid(n), sop_uid(n * s["per_study"] + i))
            ds.InstanceNumber = i + 1
            if s.get("second_class") and i % 2:
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            instances.append(ds)
        studies[study_uid(n)] = instances
    operations = Operations()
    delay = float(s.get("send_delay", 0))
    hang = float(s.get("hang_first_retrieve", 0))
    hung = []
    stopping = threading.Event()
    stated = s.get("sop_classes_in_study")

    def stated_classes(instances):
        if stated == "true":
            return sorted({str(ds.SOPClassUID) for ds in instances})
        return [str(instances[0].SOPClassUID)] if stated == "partial" else []

    def on_find(event):
        operations.begin("find")
        try:
            query = event.identifier
            level = str(query.QueryRetrieveLevel)
            wanted = str(query.get("StudyInstanceUID", "") or "")
            for uid, instances in studies.items():
                if wanted and uid != wanted:
                    continue
                if level == "STUDY":
                    first = instances[0]
                    answer = Dataset()
                    answer.QueryRetrieveLevel = "STUDY"
                    for keyword in ("StudyInstanceUID", "StudyDate", "StudyTime", "PatientID", "PatientName"):
                        setattr(answer, keyword, getattr(first, keyword))
                    answer.NumberOfStudyRelatedInstances = len(instances)
                    if "SOPClassesInStudy" in query and stated_classes(instances):
                        answer.SOPClassesInStudy = stated_classes(instances)
                    yield 0xFF00, answer
                elif level == "IMAGE":
                    operations.listed("SOPClassUID" in query)
                    for ds in instances:
                        answer = Dataset()
                        answer.QueryRetrieveLevel = "IMAGE"
                        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                            setattr(answer, keyword, getattr(ds, keyword))
                        if "SOPClassUID" in query:
                            answer.SOPClassUID = ds.SOPClassUID
                        yield 0xFF00, answer
        finally:
            operations.end()

    def send(identifier):
        """What a C-MOVE or C-GET yields for a study: the count, then each instance."""
        instances = studies.get(str(identifier.get("StudyInstanceUID", "")), [])
        yield len(instances)
        for ds in instances:
            if delay:
                time.sleep(delay)  # a busy archive, so that studies overlap
            yield 0xFF00, ds

    def hang_if_first():
        with operations.lock:
            first = not hung
            hung.append(True)
        if hang and first:
            stopping.wait(hang)  # a stuck archive, part of the scenario

    def on_move(event):
        operations.begin("move")
        try:
            destination = s["destinations"].get(str(event.move_destination).strip())
            if destination is None:
                yield None, None
                return
            yield destination[0], destination[1]
            hang_if_first()
            yield from send(event.identifier)
        finally:
            operations.end()

    def on_get(event):
        operations.begin("get")
        try:
            hang_if_first()
            yield from send(event.identifier)
        finally:
            operations.end()

    ae = new_ae(s.get("ae_title", "LEGACY"))
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)  # what build() makes
    for storage in (SecondaryCaptureImageStorage, CTImageStorage):
        # A C-GET's instances go back on its association, with the requestor as Storage SCP.
        ae.add_supported_context(storage, ExplicitVRLittleEndian, scu_role=False, scp_role=True)
    server = ae.start_server((host, port), block=False, evt_handlers=[
        (evt.EVT_C_FIND, on_find), (evt.EVT_C_MOVE, on_move), (evt.EVT_C_GET, on_get)])
    emit({"ready": True})
    try:
        sys.stdin.read()
    finally:
        stopping.set()
        server.shutdown()
    emit({"most_operations_at_once": operations.most, "finds": operations.started["find"],
          "moves": operations.started["move"], "gets": operations.started["get"],
          "class_listings": operations.listings["with classes"], "uid_listings": operations.listings["uids only"],
          "instances": sum(len(instances) for instances in studies.values())})


main()
