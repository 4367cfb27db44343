"""Stage 1: the Core API context, and metrics reported through it."""

import logging
import time

import determined as det


def main(core_context, increment_by):
    x = 0
    max_length = 100
    for batch in range(max_length):
        x += increment_by
        steps_completed = batch + 1
        time.sleep(0.01)
        logging.info(f"x is now {x}")
        if steps_completed % 10 == 0:
            core_context.train.report_training_metrics(
                steps_completed=steps_completed, metrics={"x": x}
            )
            core_context.train.report_progress(steps_completed / float(max_length))
    core_context.train.report_validation_metrics(steps_completed=steps_completed, metrics={"x": x})


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, format=det.LOG_FORMAT)
    logging.debug("debug-level message")
    logging.info("info-level message")
    logging.warning("warning-level message")
    logging.error("error-level message")

    with det.core.init() as core_context:
        main(core_context=core_context, increment_by=1)
