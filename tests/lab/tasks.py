"""The lab's Celery app (the reference runbook's `celery -A config`), on the lab's
Redis broker.

    REDIS_URL=redis://127.0.0.1:PORT/0 LAB_CELERY_DIR=D celery -A tasks worker
    ... celery -A tasks beat

`tasks.work(seconds, tag)` stands for a real job: it sleeps, then appends `tag` to
D/done, so a test can tell a job that finished from one cut off by a shutdown.
Beat sends `tasks.tick` every second, which appends a line to D/ticks: while
beat runs, that file grows.
"""
import os
import time

from celery import Celery

DIR = os.environ.get("LAB_CELERY_DIR", "/tmp")
app = Celery("tasks", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    beat_schedule={"tick": {"task": "tasks.tick", "schedule": 1.0}},
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
)


def append(name, text):
    with open(os.path.join(DIR, name), "a") as f:
        f.write(text + "\n")


@app.task(name="tasks.work")
def work(seconds, tag):
    time.sleep(float(seconds))
    append("done", tag)
    return tag


@app.task(name="tasks.tick")
def tick():
    append("ticks", f"{time.time():.3f}")
