"""The machine a run is on, and how TensorFlow should use it.

Import this module before TensorFlow: on x86 CPUs it turns on TensorFlow's
oneDNN kernels (TF_ENABLE_ONEDNN_OPTS=1), which TensorFlow 2.21 enables by
itself only on CPUs with AVX-512-class features. On an AVX2-only CPU that
roughly doubles the speed of this project's convolutions (see the README's
speed tables). A value the user set is left as it is; set
TF_ENABLE_ONEDNN_OPTS=0 to get TensorFlow's Eigen kernels instead. It also
makes glibc's malloc keep freed memory for reuse (`keep_freed_memory`),
unless GLIBC_TUNABLES sets malloc tunables of the user's own, and sizes
TensorFlow's thread pools to a container's CPU quota (`size_thread_pools`).

The rest answers questions about the hardware: which CPU (and its features)
this is, how many CPUs this process may use, whether bf16 is native here,
and the Session settings that follow.
"""

import math
import os
import platform
from pathlib import Path

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
# CPU flags (as /proc/cpuinfo spells them) that give native bf16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# CPU flags a speed figure depends on; benchmark headers list them.
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
BF16_GPU_CAPABILITY = (8, 0)  # NVIDIA Ampere and newer
# oneDNN's own switch for using fewer of the CPU's instructions than it has
# (e.g. AVX2 on an AVX-512 CPU, to see how a CPU without AVX-512 would run).
ONEDNN_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
# Its values below which bf16 is not native: with these oneDNN emulates bf16
# (AVX-512 without its bf16 instructions), or has no bf16 kernels at all and
# TensorFlow's bf16 convolutions fail ("could not create a primitive").
ONEDNN_ISAS_EMULATING_BF16 = ("AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI")
# Its values that keep oneDNN from AVX-512.
ONEDNN_ISAS_WITHOUT_AVX512 = ONEDNN_ISAS_WITHOUT_BF16 + ("AVX2_VNNI_2",)

PRECISION_CHOICES = ("auto", "fp32", "bf16")


def prefer_onednn(environ=os.environ):
    """Default TF_ENABLE_ONEDNN_OPTS to 1 on x86 CPUs; the user's value wins.

    Returns the value in force. Must run before TensorFlow is imported,
    since TensorFlow reads the variable once, when it loads.
    """
    if platform.machine().lower() in X86_MACHINES:
        environ.setdefault(ONEDNN_VARIABLE, "1")
    return environ.get(ONEDNN_VARIABLE)


prefer_onednn()

# glibc's mallopt parameters (malloc.h), and the values this project sets.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = {
    M_MMAP_THRESHOLD: 32 << 20,  # glibc's largest: blocks up to 32 MB come from the heap
    M_TRIM_THRESHOLD: 2 ** 31 - 1,  # never hand the heap's top back to the system
    M_TOP_PAD: 256 << 20,  # nor a thread's heap (glibc trims those by this pad)
}
TUNABLES_VARIABLE = "GLIBC_TUNABLES"


def keep_freed_memory(environ=os.environ):
    """Make glibc's malloc keep the memory a training step frees, for the next step.

    By default glibc returns large freed blocks to the system, and every
    step then asks for them again: at full width about 28,000 page faults a
    step, each a fresh page the kernel must zero. Kept, they are reused
    warm: measured with bench/train_speed.py, 2-10% faster steps for 1-2%
    more resident memory (README, "Speed"). Applies to this process from
    now on; a no-op off glibc, and where the user set glibc's malloc
    tunables in GLIBC_TUNABLES (their choice wins).

    Returns whether the settings are in force.
    """
    import ctypes
    if platform.libc_ver()[0] != "glibc" or "malloc" in environ.get(TUNABLES_VARIABLE, ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in MALLOC_SETTINGS.items())


MALLOC_KEEPS_FREED_MEMORY = keep_freed_memory()


def onednn_enabled():
    """Whether TensorFlow (already imported) runs its oneDNN kernels."""
    from tensorflow.python.util import _pywrap_util_port  # the check TF's own log uses
    return bool(_pywrap_util_port.IsMklEnabled())


def cpu_model_and_flags(cpuinfo="/proc/cpuinfo"):
    """(model name, set of feature flags) of this machine's CPU.

    Read from /proc/cpuinfo on Linux; elsewhere the flags are unknown (an
    empty set), which makes every feature test answer "no".
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cgroup_cpu_limit(root="/sys/fs/cgroup"):
    """CPUs a container's CPU quota allows (may be fractional), or None if unlimited."""
    root = Path(root)
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus():
    """CPUs this process may use: its affinity mask, capped by a container quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return count


THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def size_thread_pools(environ=os.environ, cpus=None):
    """Size TensorFlow's thread pools to the usable CPUs where they are fewer
    than the machine's; the user's values win. Returns the variables set.

    A Session's intra_op_parallelism_threads is not enough: TensorFlow
    makes its pools once per process, and tf.distribute makes them before
    the first Session, with one thread per CPU of the machine. Measured
    with a 1-CPU Session config on 2 cores: both cores still busy (0.167
    s/step at half width, against 0.25 with these variables).
    """
    cpus = usable_cpus() if cpus is None else cpus
    if cpus >= (os.cpu_count() or cpus):
        return {}
    for name in THREAD_VARIABLES:
        environ.setdefault(name, str(cpus))
    return {name: environ[name] for name in THREAD_VARIABLES}


size_thread_pools()


def gpu_capabilities():
    """[(major, minor)] compute capability of each visible GPU (needs TensorFlow)."""
    import tensorflow as tf
    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append(tuple(details.get("compute_capability") or (0, 0)))
    return found


def onednn_isa_cap(environ=os.environ):
    """The instruction set ONEDNN_MAX_CPU_ISA limits oneDNN to, upper case, or ""."""
    return environ.get(ONEDNN_ISA_VARIABLE, "").strip().upper()


def native_bf16(cpu_flags=None, gpus=None, environ=os.environ):
    """(True if bf16 arithmetic is native where the graph will run, why).

    The graph runs on the GPUs when there are any, otherwise on the CPU,
    whose bf16 instructions oneDNN uses unless ONEDNN_MAX_CPU_ISA forbids.
    """
    gpus = gpu_capabilities() if gpus is None else gpus
    if gpus:
        slow = [f"{major}.{minor}" for major, minor in gpus if (major, minor) < BF16_GPU_CAPABILITY]
        if slow:
            return False, (f"GPU compute capability {', '.join(slow)} is below "
                           f"{BF16_GPU_CAPABILITY[0]}.{BF16_GPU_CAPABILITY[1]}")
        return True, "every GPU has compute capability 8.0 or more"
    cap = onednn_isa_cap(environ)
    if cap in ONEDNN_ISAS_EMULATING_BF16 + ONEDNN_ISAS_WITHOUT_BF16:
        return False, f"{ONEDNN_ISA_VARIABLE}={cap} keeps oneDNN from the CPU's bf16 instructions"
    cpu_flags = cpu_model_and_flags()[1] if cpu_flags is None else cpu_flags
    have = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags]
    if have:
        return True, f"the CPU has {' and '.join(have)}"
    return False, f"the CPU has neither {' nor '.join(BF16_CPU_FLAGS)}"


def onednn_cpu_kernels(gpus=None, environ=os.environ):
    """True where the graph runs on oneDNN's x86 CPU kernels: no GPU takes
    it, and TensorFlow's own kernels are not asked for
    (TF_ENABLE_ONEDNN_OPTS=0)."""
    if (platform.machine().lower() not in X86_MACHINES
            or environ.get(ONEDNN_VARIABLE) == "0"):
        return False
    return not (gpu_capabilities() if gpus is None else gpus)


def onednn_without_avx512(cpu_flags=None, gpus=None, environ=os.environ):
    """True where the graph runs on oneDNN's CPU kernels (onednn_cpu_kernels)
    and none of them use AVX-512: an x86 CPU without it (AVX2 only), or one
    that ONEDNN_MAX_CPU_ISA holds below it."""
    if not onednn_cpu_kernels(gpus, environ):
        return False
    if onednn_isa_cap(environ) in ONEDNN_ISAS_WITHOUT_AVX512:
        return True
    cpu_flags = cpu_model_and_flags()[1] if cpu_flags is None else cpu_flags
    return "avx512f" not in cpu_flags


def resolve_precision(requested, cpu_flags=None, gpus=None, environ=os.environ):
    """The compute precision for --precision, and a sentence saying why.

    Returns:
      ("fp32" or "bf16", reason, warning or None). "auto" picks bf16 only
      where it is native; an explicit bf16 without native support gets a
      warning, since every bf16 operation is then emulated.

    Raises:
      ValueError: an unknown precision, or bf16 asked for on a CPU where
        ONEDNN_MAX_CPU_ISA leaves oneDNN no bf16 kernels.
    """
    if requested not in PRECISION_CHOICES:
        raise ValueError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, "
                         f"got {requested!r}")
    if requested == "fp32":
        return "fp32", "asked for", None
    gpus = gpu_capabilities() if gpus is None else gpus
    native, why = native_bf16(cpu_flags, gpus, environ)
    if requested == "auto":
        return ("bf16" if native else "fp32"), f"auto: {why}", None
    cap = onednn_isa_cap(environ)
    if cap in ONEDNN_ISAS_WITHOUT_BF16 and not gpus and environ.get(ONEDNN_VARIABLE) != "0":
        raise ValueError(f"--precision bf16 cannot run with {ONEDNN_ISA_VARIABLE}={cap}: oneDNN "
                         f"has no bf16 kernels for it; use --precision fp32 or auto, or "
                         f"unset {ONEDNN_ISA_VARIABLE}")
    warning = None if native else (
        f"warning: --precision bf16 on hardware without native bf16 ({why}): every bf16 "
        f"operation is emulated, which makes training several times slower than fp32; "
        f"use --precision auto or fp32")
    return "bf16", "asked for", warning


def session_config(cpus=None):
    """Session settings that suit CPU and GPU alike.

    TensorFlow sizes its thread pools from the CPUs the process may run on,
    but knows nothing of a container's CPU quota: more threads than the
    quota allows only take turns. So where fewer CPUs are usable than the
    machine has, both pools are sized to them.
    """
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True  # share a GPU rather than grab all of it
    cpus = usable_cpus() if cpus is None else cpus
    if cpus < (os.cpu_count() or cpus):
        config.intra_op_parallelism_threads = cpus
        config.inter_op_parallelism_threads = cpus
    return config


def describe():
    """One header line naming the machine a figure was measured on."""
    import tensorflow as tf
    model, flags = cpu_model_and_flags()
    features = " ".join(f"{flag}:{'yes' if flag in flags else 'no'}"
                        for flag in REPORTED_CPU_FLAGS)
    gpus = tf.config.list_physical_devices("GPU")
    onednn = "on" if onednn_enabled() else "off"
    # A figure taken with fewer of the CPU's instructions must say so.
    capped = os.environ.get(ONEDNN_ISA_VARIABLE)
    malloc = "keeps freed memory" if MALLOC_KEEPS_FREED_MEMORY else "as it was"
    return (f"machine: {model}; {usable_cpus()} usable of {os.cpu_count()} CPUs; {features}; "
            f"GPUs: {len(gpus)}; TensorFlow {tf.__version__}, oneDNN {onednn} "
            f"({ONEDNN_VARIABLE}={os.environ.get(ONEDNN_VARIABLE, 'unset')}"
            + (f", {ONEDNN_ISA_VARIABLE}={capped}" if capped else "") + f"); malloc {malloc}")
