#!/usr/bin/env bash
# The checks that need a CUDA GPU, for a GPU machine lent for minutes:
#
#   bench  benchmarks/gpu.py on the JAX and torch backends, with 4 and 12
#          workers: the published GPU table (a few minutes);
#   order  the Keras tests whose fits run on the GPU and check which samples the
#          model received (ORDER_TESTS below), on the JAX and torch backends side
#          by side (about 1.5 minutes on an H200 machine with 16 cores);
#   rest   the other Keras tests, subprocess-heavy (audit, faults, multi-process
#          runs: over 4 minutes there); the one test that compares all of
#          /dev/shm runs alone after them.
#
#     benchmarks/gpu_checks.sh OUT_DIR [bench] [order] [rest]   (default: bench order)
#
# Every step has its own time limit; each step's output is in OUT_DIR. The
# notebook and Hugging Face tests are left out: they need Jupyter and `datasets`,
# and nothing in them touches the GPU.
set -u
out=${1:?usage: benchmarks/gpu_checks.sh OUT_DIR [bench] [order] [rest]}
shift
parts=${*:-bench order}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# Two test runs and their workers share the GPU: JAX takes memory as it needs it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
shm_test="tests/keras/test_faults.py::test_interrupted_fit_leaves_no_process_and_no_shared_memory"

machine() {
    date -u
    nvidia-smi -L
    echo "CPUs: $(nproc); /dev/shm: $(df -h /dev/shm | tail -1)"
    KERAS_BACKEND=jax $python -c "import sys, keras, torch, jax, numpy, PIL
print('python', sys.version.split()[0], '| keras', keras.__version__, '| torch', torch.__version__,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA',
      '| jax', jax.__version__, jax.devices(), '| numpy', numpy.__version__, '| pillow', PIL.__version__)"
}

run_bench() {
    # The benchmark's image folder, written by one process per core.
    $python -c "import sys; sys.path.insert(0, 'benchmarks'); import _data
_data.image_folder('data/gpu/500x375_2048', 2048, size=(500, 375))"
    for backend in jax torch; do
        echo "== benchmarks/gpu.py, $backend"
        # shellcheck disable=SC2086 # GPU_ARGS is a list of arguments
        KERAS_BACKEND=$backend timeout "${BENCH_LIMIT:-150}" \
            $python benchmarks/gpu.py ${GPU_ARGS:---workers 4,12} 2>&1 |
            grep -v "^WARNING\|^I0000\|^E0000" | tee "$out/gpu_$backend.txt"
    done
}

pytest_run() {  # backend, time limit, pytest arguments...
    local backend=$1 limit=$2
    shift 2
    KERAS_BACKEND=$backend timeout "$limit" \
        $python -m pytest -p no:cacheprovider -rfE --durations=10 "$@"
}

# The tests whose fits run on the GPU and check which samples the model received.
ORDER_TESTS="test_fit test_read_ahead test_feeding test_image_fit test_keras_calls
    test_edge_cases_keras test_callbacks test_resume test_distribution"

run_order() {
    echo "== the order tests on jax and torch, side by side"
    local files=() file
    for file in $ORDER_TESTS; do files+=("tests/keras/$file.py"); done
    for backend in jax torch; do
        pytest_run "$backend" "${TEST_LIMIT:-215}" -v "${files[@]}" >"$out/order_$backend.txt" 2>&1 &
    done
    wait
    for backend in jax torch; do
        echo "-- $backend: $(tail -1 "$out/order_$backend.txt")"
        grep "^FAILED\|^ERROR" "$out/order_$backend.txt"
    done
}

run_rest() {
    echo "== the other Keras tests on jax and torch, side by side"
    local ignored=() file
    for file in $ORDER_TESTS test_notebook test_hf_fit; do ignored+=(--ignore "tests/keras/$file.py"); done
    for backend in jax torch; do
        pytest_run "$backend" "${TEST_LIMIT:-400}" -v tests/keras "${ignored[@]}" --deselect "$shm_test" \
            >"$out/rest_$backend.txt" 2>&1 &
    done
    wait
    for backend in jax torch; do
        echo "-- $backend: $(tail -1 "$out/rest_$backend.txt")"
        grep "^FAILED\|^ERROR" "$out/rest_$backend.txt"
        echo "-- $backend, the /dev/shm test alone: $(pytest_run "$backend" 40 "$shm_test" 2>&1 | tail -1)"
    done
}

machine 2>&1 | tee "$out/machine.txt"
for part in $parts; do
    "run_$part"
done
