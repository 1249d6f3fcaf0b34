"""The machine: oneDNN default, CPU features, usable CPUs, precision choice."""

import os
import platform
import subprocess
import sys

import pytest

import hardware
from conftest import PROJECT

ON_X86 = platform.machine().lower() in hardware.X86_MACHINES


def test_onednn_defaults_to_on_on_x86_and_the_users_value_wins():
    environ = {}
    hardware.prefer_onednn(environ)
    assert environ == ({"TF_ENABLE_ONEDNN_OPTS": "1"} if ON_X86 else {})
    environ = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert hardware.prefer_onednn(environ) == "0" and environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


ONEDNN_PROBE = "import {module}, hardware; print(hardware.onednn_enabled())"


@pytest.mark.skipif(not ON_X86, reason="oneDNN is turned on by default on x86 CPUs only")
@pytest.mark.parametrize("module", ["train_gan", "predict_gan", "evaluate_gan"])
def test_every_entry_point_turns_onednn_on_before_tensorflow_loads(module):
    """In a fresh interpreter, as a user runs the script: TensorFlow reads the
    variable once, so this checks the import order, on any x86 CPU."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for value, expected in ((None, "True"), ("0", "False")):
        if value is not None:
            environ["TF_ENABLE_ONEDNN_OPTS"] = value
        probe = ONEDNN_PROBE.format(module=module)
        out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, env=environ,
                             capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == expected, (value, out)


def test_cpu_model_and_flags_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma\n\n"
                       "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma\n")
    assert hardware.cpu_model_and_flags(cpuinfo) == ("Test CPU 9000", {"fpu", "avx2", "fma"})
    model, flags = hardware.cpu_model_and_flags(tmp_path / "missing")
    assert model and flags == set()


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma"}, "fp32"),                        # an AVX2-only CPU
    ({"avx2", "avx512f"}, "fp32"),                    # AVX-512 without bf16
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
    ({"avx2", "avx512f", "amx_bf16"}, "bf16"),
])
def test_auto_precision_picks_bf16_only_where_the_cpu_has_it(flags, expected):
    precision, reason, warning = hardware.resolve_precision("auto", cpu_flags=flags, gpus=[])
    assert precision == expected and reason.startswith("auto: the CPU has") and warning is None


def test_auto_precision_on_gpus_follows_their_compute_capability():
    assert hardware.resolve_precision("auto", cpu_flags=set(), gpus=[(8, 0), (9, 0)])[0] == "bf16"
    precision, reason, _ = hardware.resolve_precision("auto", cpu_flags={"amx_bf16"},
                                                      gpus=[(8, 6), (7, 5)])
    assert precision == "fp32" and "7.5" in reason  # the graph runs on the GPUs, not the CPU


def test_explicit_precisions_are_kept_and_emulated_bf16_is_warned_about():
    assert hardware.resolve_precision("fp32", cpu_flags={"amx_bf16"}, gpus=[]) == (
        "fp32", "asked for", None)
    precision, _, warning = hardware.resolve_precision("bf16", cpu_flags={"avx2"}, gpus=[])
    assert precision == "bf16" and "several times slower" in warning
    assert hardware.resolve_precision("bf16", cpu_flags={"avx512_bf16"}, gpus=[])[2] is None
    with pytest.raises(ValueError, match="--precision must be one of auto, fp32, bf16"):
        hardware.resolve_precision("fp16")


def test_a_onednn_instruction_cap_below_bf16_is_not_native_bf16():
    bf16_cpu = {"avx2", "avx512f", "avx512_bf16"}
    for cap in ("avx512_core", "AVX2", "AVX512_CORE_VNNI"):
        precision, reason, _ = hardware.resolve_precision(
            "auto", cpu_flags=bf16_cpu, gpus=[], environ={"ONEDNN_MAX_CPU_ISA": cap})
        assert precision == "fp32" and f"ONEDNN_MAX_CPU_ISA={cap.upper()}" in reason
    assert hardware.resolve_precision("auto", cpu_flags=bf16_cpu, gpus=[], environ={
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"})[0] == "bf16"
    # AVX-512 emulates bf16; AVX2 has no bf16 kernels, and TensorFlow's would fail.
    _, _, warning = hardware.resolve_precision(
        "bf16", cpu_flags=bf16_cpu, gpus=[], environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})
    assert "emulated" in warning
    with pytest.raises(ValueError, match="ONEDNN_MAX_CPU_ISA=AVX2: oneDNN has no bf16"):
        hardware.resolve_precision("bf16", cpu_flags=bf16_cpu, gpus=[],
                                   environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert hardware.resolve_precision("bf16", cpu_flags=bf16_cpu, gpus=[], environ={
        "ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"})[0] == "bf16"


@pytest.mark.skipif(not ON_X86, reason="oneDNN's instruction sets here are x86's")
def test_onednn_without_avx512_where_the_cpu_or_a_cap_keeps_it_from_avx512():
    avx512 = {"avx2", "avx512f"}
    assert hardware.onednn_without_avx512(cpu_flags={"avx2", "fma"}, gpus=[], environ={})
    assert not hardware.onednn_without_avx512(cpu_flags=avx512, gpus=[], environ={})
    for cap, expected in (("avx2", True), ("AVX2_VNNI_2", True), ("AVX512_CORE", False)):
        assert hardware.onednn_without_avx512(cpu_flags=avx512, gpus=[], environ={
            "ONEDNN_MAX_CPU_ISA": cap}) == expected, cap
    # GPUs take the graph; TensorFlow's own kernels are not oneDNN's.
    assert not hardware.onednn_without_avx512(cpu_flags={"avx2"}, gpus=[(8, 0)], environ={})
    assert not hardware.onednn_without_avx512(cpu_flags={"avx2"}, gpus=[], environ={
        "TF_ENABLE_ONEDNN_OPTS": "0"})
    assert hardware.onednn_cpu_kernels(gpus=[], environ={})
    assert not hardware.onednn_cpu_kernels(gpus=[(8, 0)], environ={})
    assert not hardware.onednn_cpu_kernels(gpus=[], environ={"TF_ENABLE_ONEDNN_OPTS": "0"})


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_a_container_cpu_quota_limits_the_cpus_and_none_means_no_limit(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert hardware.cgroup_cpu_limit(tmp_path) == expected


def test_usable_cpus_follow_the_affinity_mask():
    assert 1 <= hardware.usable_cpus() <= len(os.sched_getaffinity(0))
    script = "import hardware; print(hardware.usable_cpus())"
    out = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True,
                         text=True, check=True, preexec_fn=lambda: os.sched_setaffinity(0, {
                             min(os.sched_getaffinity(0))})).stdout
    assert out.strip() == "1"


def test_session_threads_are_sized_to_the_usable_cpus_only_when_fewer():
    assert hardware.session_config(cpus=1).intra_op_parallelism_threads == (
        1 if os.cpu_count() > 1 else 0)
    everything = hardware.session_config(cpus=os.cpu_count())
    assert everything.intra_op_parallelism_threads == 0  # TensorFlow's own choice
    assert everything.inter_op_parallelism_threads == 0
    assert everything.allow_soft_placement and everything.gpu_options.allow_growth


def test_thread_pools_follow_a_quota_and_the_users_values_win():
    environ = {"TF_NUM_INTEROP_THREADS": "3"}
    assert hardware.size_thread_pools(environ, cpus=os.cpu_count()) == {}
    assert environ == {"TF_NUM_INTEROP_THREADS": "3"}
    if os.cpu_count() > 1:
        assert hardware.size_thread_pools(environ, cpus=1) == {
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "3"}


BUSY_THREADS = """
import os, sys, time
import hardware
hardware.size_thread_pools(cpus=int(sys.argv[1]))
import tensorflow as tf
tf.distribute.OneDeviceStrategy("/cpu:0")  # makes TensorFlow's pools before the Session
tf.compat.v1.disable_eager_execution()
a = tf.Variable(tf.random.uniform([1024, 1024]))
total = tf.reduce_sum(tf.matmul(a, a))
def cpu_seconds():
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        ticks[tid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return ticks
with tf.compat.v1.Session(config=hardware.session_config(cpus=int(sys.argv[1]))) as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    before, started = cpu_seconds(), time.monotonic()
    while time.monotonic() - started < 2:
        sess.run(total)
    after, seconds = cpu_seconds(), time.monotonic() - started
print(sum((after[t] - before.get(t, 0)) / seconds > 0.3 for t in after))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs")
def test_a_quota_of_one_cpu_keeps_tensorflow_to_one_busy_thread():
    def busy_threads(cpus):
        return int(subprocess.run([sys.executable, "-c", BUSY_THREADS, str(cpus)],
                                  cwd=PROJECT, capture_output=True, text=True,
                                  check=True).stdout.split()[-1])
    assert busy_threads(1) == 1
    assert busy_threads(os.cpu_count()) >= 2  # the check can see more than one


def test_header_names_the_machine_and_the_onednn_state():
    header = hardware.describe()
    model, _ = hardware.cpu_model_and_flags()
    assert header.startswith(f"machine: {model};")
    for flag in hardware.REPORTED_CPU_FLAGS:
        assert f"{flag}:" in header
    state = "on" if hardware.onednn_enabled() else "off"
    assert f"oneDNN {state}" in header and "TensorFlow 2." in header
    assert "; malloc " in header


# A child whose thread takes an 8 MB block from malloc four times, writing
# all of it and freeing it in between, and reports each time's page faults
# (each a fresh page the kernel had to zero). Through ctypes rather than
# NumPy, which asks for huge pages for large arrays: where the kernel has
# them to give, a fresh block then faults a handful of times, not ~2,000.
REALLOCATION_FAULTS = """
import ctypes, resource, threading
import hardware
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def allocate():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(8 << 20)
        ctypes.memset(block, 1, 8 << 20)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
        libc.free(block)
thread = threading.Thread(target=allocate); thread.start(); thread.join()
print(hardware.MALLOC_KEEPS_FREED_MEMORY, *faults)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_memory_is_reused_without_page_faults_unless_the_user_tunes_malloc():
    def faults(environ):
        env = {k: v for k, v in os.environ.items() if k != hardware.TUNABLES_VARIABLE}
        out = subprocess.run([sys.executable, "-c", REALLOCATION_FAULTS], cwd=PROJECT,
                             env={**env, **environ}, capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0] == "True", [int(count) for count in out[1:]]

    kept, kept_faults = faults({})
    left, default_faults = faults({hardware.TUNABLES_VARIABLE:
                                   "glibc.malloc.trim_threshold=131072"})
    assert kept and not left
    first = kept_faults[0]  # the first time, both must fault the block in
    assert first > 100 and default_faults[0] > 100
    assert max(kept_faults[1:]) < first / 10, kept_faults
    assert min(default_faults[1:]) > first / 2, default_faults  # glibc gives it back each time


# (sys_platform, platform_machine) as each OS reports them, and the
# TensorFlow wheel that exists there for 2.21.
INSTALL_TARGETS = [("linux", "x86_64", "tensorflow-cpu"), ("win32", "AMD64", "tensorflow-cpu"),
                   ("darwin", "arm64", "tensorflow"), ("linux", "aarch64", "tensorflow")]


@pytest.mark.parametrize("sys_platform, machine, wheel", INSTALL_TARGETS)
def test_requirements_install_the_tensorflow_wheel_that_exists_there(sys_platform, machine,
                                                                      wheel):
    """tensorflow-cpu is published for x86-64 Linux and Windows only: elsewhere
    requirements.txt must ask for tensorflow, or the first command fails."""
    from packaging.requirements import Requirement
    environment = {"sys_platform": sys_platform, "platform_machine": machine}
    lines = (PROJECT / "requirements.txt").read_text().splitlines()
    wanted = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    tensorflow = [r for r in wanted if r.name.startswith("tensorflow")
                  and (r.marker is None or r.marker.evaluate(environment))]
    assert [(r.name, str(r.specifier)) for r in tensorflow] == [(wheel, "==2.21.0")]
