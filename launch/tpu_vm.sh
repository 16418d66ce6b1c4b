#!/usr/bin/env bash
# Trains wss on a single-host Cloud TPU VM (TPUStrategy) from your workstation, with gcloud.
#
#   export TPU_NAME=wss-v3 ZONE=europe-west4-a ACCELERATOR_TYPE=v3-8 \
#          RUNTIME_VERSION=<a TensorFlow TPU VM runtime, see `versions` below>
#   launch/tpu_vm.sh versions   # lists the runtime versions of the zone
#   launch/tpu_vm.sh create     # creates the TPU VM
#   launch/tpu_vm.sh setup      # copies this checkout (git HEAD) and installs wss on it
#   launch/tpu_vm.sh train -- --gin_file=voc_semi.gin --logdir=gs://BUCKET/voc_1_16 \
#       --gin_bindings="VOC_DIR='gs://BUCKET/voc_records'"
#   launch/tpu_vm.sh log        # follows the training log
#   launch/tpu_vm.sh ssh        # a shell on the VM
#   launch/tpu_vm.sh delete     # deletes the TPU VM
#
# `train` starts `python3 -m wss.train --strategy=tpu --tpu=local` with
# `train.mixed_precision_policy='mixed_bfloat16'` in the background on the VM (it survives the
# ssh session; output in ~/wss_train.log). Arguments after `--` are passed on; a later
# --gin_bindings overrides the bf16 policy. `setup` installs wss with --no-deps so that the
# TPU build of TensorFlow that the runtime image ships is kept.
# DRY_RUN=1 prints the gcloud commands instead of running them. Pod slices (several hosts)
# are not handled here; see launch/README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"
REMOTE_DIR="${REMOTE_DIR:-wss}"   # Relative to the remote home directory.

# REMOTE_DIR is removed and recreated by `setup`: only a plain relative path is accepted
# (letters, digits, `_`, `-`, `.`, `/`; no `..`, no leading `/` or `~`), and it is quoted
# wherever it reaches the remote shell.
check_remote_dir() {
  if [[ ! "${REMOTE_DIR}" =~ ^[A-Za-z0-9_][A-Za-z0-9_./-]*$ || "${REMOTE_DIR}" =~ (^|/)\.\.?(/|$) ]]; then
    echo "error: REMOTE_DIR='${REMOTE_DIR}': use a plain path relative to the remote home" \
      "directory (letters, digits, _ - . /), e.g. REMOTE_DIR=wss" >&2
    exit 2
  fi
}

usage() {
  sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

need() {  # need VAR...: fail naming the first unset environment variable.
  local name
  for name in "$@"; do
    if [[ -z "${!name:-}" ]]; then
      echo "error: set ${name} (e.g. export ${name}=...); see launch/tpu_vm.sh --help" >&2
      exit 2
    fi
  done
}

run() {  # run COMMAND...: run it, or print it (single-quoted where needed) with DRY_RUN=1.
  if [[ "${DRY_RUN}" == "1" ]]; then
    local arg line=""
    for arg in "$@"; do
      if [[ "${arg}" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        line+="${arg} "
      else
        line+="'${arg//\'/\'\\\'\'}' "
      fi
    done
    echo "${line% }"
  else
    "$@"
  fi
}

on_vm() {  # on_vm 'SHELL COMMAND': run a command on the TPU VM.
  run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" --command="$1"
}

command="${1:-}"
[[ -n "${command}" ]] || usage 2
shift

case "${command}" in
  -h|--help|help)
    usage 0
    ;;
  versions)
    need ZONE
    run gcloud compute tpus tpu-vm versions list --zone="${ZONE}"
    ;;
  create)
    need TPU_NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION
    run gcloud compute tpus tpu-vm create "${TPU_NAME}" --zone="${ZONE}" \
      --accelerator-type="${ACCELERATOR_TYPE}" --version="${RUNTIME_VERSION}"
    ;;
  setup)
    need TPU_NAME ZONE
    check_remote_dir
    remote_dir="$(printf '%q' "${REMOTE_DIR}")"
    archive_dir="$(mktemp -d)"
    archive="${archive_dir}/wss.tar.gz"
    run git -C "${REPO}" archive --format=tar.gz -o "${archive}" HEAD
    run gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:wss.tar.gz" --zone="${ZONE}"
    on_vm "rm -rf -- ${remote_dir} && mkdir -p -- ${remote_dir} \
      && tar -xzf wss.tar.gz -C ${remote_dir} \
      && python3 -c 'import tensorflow as tf; print(\"TensorFlow\", tf.__version__)' \
      && pip install --no-deps -e ${remote_dir} && pip install 'gin-config>=0.5' 'absl-py>=1.0'"
    rm -rf "${archive_dir}"
    ;;
  train)
    need TPU_NAME ZONE
    if [[ "${1:-}" == "--" ]]; then shift; fi
    [[ $# -gt 0 ]] || { echo "error: train needs wss.train arguments after --" >&2; exit 2; }
    for arg in "$@"; do
      if [[ "${arg}" == --strategy* || "${arg}" == --tpu* ]]; then
        echo "error: ${arg}: launch/tpu_vm.sh sets --strategy=tpu --tpu=local" >&2
        exit 2
      fi
    done
    args=(-m wss.train --strategy=tpu --tpu=local
          "--gin_bindings=train.mixed_precision_policy = 'mixed_bfloat16'" "$@")
    check_remote_dir
    quoted="$(printf '%q ' "${args[@]}")"
    on_vm "cd -- $(printf '%q' "${REMOTE_DIR}") \
      && nohup python3 ${quoted} > ~/wss_train.log 2>&1 < /dev/null & \
      echo started wss.train on $(printf '%q' "${TPU_NAME}"), log: ~/wss_train.log"
    ;;
  log)
    need TPU_NAME ZONE
    on_vm "tail -n 50 -f ~/wss_train.log"
    ;;
  ssh)
    need TPU_NAME ZONE
    run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}"
    ;;
  delete)
    need TPU_NAME ZONE
    run gcloud compute tpus tpu-vm delete "${TPU_NAME}" --zone="${ZONE}" --quiet
    ;;
  *)
    echo "error: unknown command ${command}" >&2
    usage 2
    ;;
esac
