"""Kill training with SIGKILL again and again; check that nothing is lost.

    python bench/kill_soak.py                 # 20 kills of a tiny model
    python bench/kill_soak.py --cycles 50 --seed 3

Trains a tiny model on synthetic faces once without interruption (the
reference), then trains the same run in cycles: start train_gan.py, let it
run for a random time, kill -9 it (at any moment, checkpoint writes
included), start it again. Reports how many cycles were survived (every
restart resumed, none failed to start), the steps each kill cost (last step
logged before the kill minus the step the next start resumed from), the
final step, and whether the final weights match the reference run's.
"""

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import hardware  # noqa: E402  (before TensorFlow: it sets the oneDNN default)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gan_run  # noqa: E402
import demo_faces  # noqa: E402

STEP_LINE = re.compile(r"^step (\d+)/")
RESUME_LINE = re.compile(r"^resuming from .* \(step (\d+)\)")


def train_command(data, root, max_steps, ckpt_every):
    return [sys.executable, str(PROJECT / "train_gan.py"), "--data_root", str(data),
            "--ckpt_dir", str(root / "ckpt"), "--samples_dir", str(root / "samples"),
            "--log_dir", str(root / "logs"), "--cache_dir", str(root / "cache"),
            "--gf_dim", "8", "--df_dim", "8", "--z_dim", "16", "--batch_size", "8",
            "--max_steps", str(max_steps), "--log_every", "1", "--ckpt_every", str(ckpt_every),
            "--sample_every", "100000", "--keep_checkpoints", "3"]


class Cycle:
    """One start of train_gan.py, read line by line in the background."""

    def __init__(self, command):
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.resumed_from = 0
        self.last_step = None
        self.training = threading.Event()
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)
            if match := RESUME_LINE.match(line):
                self.resumed_from = int(match.group(1))
            elif match := STEP_LINE.match(line):
                self.last_step = int(match.group(1))
                self.training.set()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.reader.join()


def final_weights(root):
    reader = tf.train.load_checkpoint(gan_run.latest_checkpoint(root / "ckpt"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--cycles", type=int, default=20, help="kills before the run may finish")
    parser.add_argument("--max_steps", type=int, default=1500, help="length of the run")
    parser.add_argument("--ckpt_every", type=int, default=10, help="steps between checkpoints")
    parser.add_argument("--max_wait", type=float, default=3.0,
                        help="longest time a cycle trains before its kill, in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    args = parser.parse_args(argv)
    print(hardware.describe(), flush=True)
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = demo_faces.make_demo_data(scratch / "faces", 64, log=lambda *_: None)
        reference = scratch / "reference"
        subprocess.run(train_command(data, reference, args.max_steps, args.ckpt_every),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        soak = scratch / "soak"
        command = train_command(data, soak, args.max_steps, args.ckpt_every)
        lost, failures, previous = [], 0, None
        for number in range(args.cycles):
            cycle = Cycle(command)
            if previous is not None:  # what the last kill cost
                cycle.training.wait(timeout=120)
                lost.append(previous.last_step - cycle.resumed_from)
            if not cycle.training.wait(timeout=120):
                failures += 1
                print(f"cycle {number + 1}: did not start training:\n{''.join(cycle.lines)}")
            time.sleep(rng.uniform(0, args.max_wait))
            finished = cycle.process.poll() is not None
            cycle.kill()
            if finished:
                print(f"cycle {number + 1}: the run finished before its kill; "
                      f"raise --max_steps for more kills")
                break
            previous = cycle
        last = Cycle(command)  # the undisturbed end of the run
        last.process.wait()
        last.reader.join()
        if previous is not None:
            lost.append(previous.last_step - last.resumed_from)
        if last.process.returncode != 0:
            failures += 1
            print("".join(last.lines))

        expected, got = final_weights(reference), final_weights(soak)
        differences = [float(np.abs(expected[name] - got[name]).max()) for name in expected]
        print(f"kills: {len(lost)}, restarts that failed: {failures}")
        print(f"steps lost per kill: max {max(lost)}, mean {statistics.mean(lost):.1f} "
              f"(checkpoint every {args.ckpt_every} steps)")
        final_step = gan_run.step_of(gan_run.latest_checkpoint(soak / "ckpt"))
        print(f"final step: {final_step} of {args.max_steps}")
        print(f"final weights vs the uninterrupted run: max abs difference {max(differences):.2e} "
              f"({'match' if max(differences) < 1e-3 else 'DIFFER'})")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
