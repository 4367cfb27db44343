"""Stage 0: a training script that knows nothing of the cluster; it counts up by one."""

import time


def main(increment_by):
    x = 0
    for batch in range(100):
        x += increment_by
        time.sleep(0.01)
        print(f"x is now {x}")


if __name__ == "__main__":
    main(increment_by=1)
