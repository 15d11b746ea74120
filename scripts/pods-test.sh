#!/usr/bin/env bash
# The containerised phase of scripts/test.sh: the four images (scripts/images.sh) run from the
# manifests (scripts/pods-up.sh, an instance of its own on free ports), and the tutorial flow
# against the containerised gateway: a user added with the auth image's own CLI, login, an upload
# of each common container format, the "ready" mail, the download (an MP3 of the right length).
# Then every container is checked against its manifest (user, read-only root, nothing written
# outside its volumes), and the instance is removed (scripts/pods-down.sh) whatever happened.
# Exit status 0 only when all of it passed. Needs the servers of scripts/deps.sh and ffmpeg on
# the host (to make the sample videos and check the MP3s).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

case ${1:-} in
  -h | --help)
    echo "usage: scripts/pods-test.sh [--no-build]   (builds the images first unless --no-build)"
    exit 0
    ;;
esac
BUILD=1
[[ ${1:-} == --no-build ]] && BUILD=0

MP3C_ME=pods-test
# shellcheck source=_lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/_lib.sh"
# shellcheck source=pods-lib.sh
source "$MP3C_ROOT/scripts/pods-lib.sh"
cd "$MP3C_ROOT"
mp3c_dirs

if ((BUILD)); then
  bash scripts/images.sh
fi

NAME=mp3c-test-$$
WORK=$MP3C_DEV_DIR/pods-test-$$
mkdir -p "$WORK"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  bash "$MP3C_ROOT/scripts/pods-down.sh" --name "$NAME" >/dev/null 2>&1 || log "pods-down.sh --name $NAME failed"
  rm -rf -- "$WORK"
}
trap cleanup EXIT

PODS_GATEWAY_PORT=0 PODS_AUTH_PORT=0 PODS_CONVERTER_PORT=0 PODS_NOTIFICATION_PORT=0 \
  bash scripts/pods-up.sh --name "$NAME" --no-demo-user >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  die "pods-up.sh failed"
}
gw=http://127.0.0.1:$(awk -F= '$1 == "GATEWAY_PORT" {print $2}' "$(pods_state_dir "$NAME")/instance")
log "instance $NAME up; gateway $gw"

fail() {
  local svc
  for svc in "${PODS_SERVICES[@]}"; do
    echo "----- podman logs $(pods_container "$NAME" "$svc") (last 30 lines)" >&2
    podman logs --tail 30 "$(pods_container "$NAME" "$svc")" >&2 2>&1 || true
  done
  die "$*"
}

# A user of this run, added by the auth image's own CLI inside its pod (the pod's environment).
email="pods-$$-$(date +%s)@example.com"
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')
printf '%s' "$password" | podman exec -i "$(pods_container "$NAME" auth)" /usr/local/bin/auth user add "$email" >/dev/null 2>&1 ||
  fail "auth user add inside the auth container failed"

token=$(curl -fsS -X POST -u "$email:$password" "$gw/login") || fail "login failed"
[[ $(curl -s -o /dev/null -w '%{http_code}' -X POST -u "$email:wrong-$password" "$gw/login") == 401 ]] ||
  fail "a wrong password was not answered 401"

# Common containers and their usual audio: each must become an MP3 through the image's ffmpeg.
# name  ffmpeg output options (3 s of test video and a tone)
samples=(
  "mkv:-c:v mpeg4 -c:a aac"
  "mp4:-c:v mpeg4 -c:a aac"
  "webm:-c:v libvpx -c:a libopus"
  "mov:-c:v mpeg4 -c:a aac"
  "avi:-c:v mpeg4 -c:a libmp3lame"
  "flv:-c:v flv -c:a aac"
  "ts:-c:v mpeg2video -c:a mp2"
  "ogg:-c:v libtheora -c:a libvorbis"
  "wmv:-c:v wmv2 -c:a wmav2"
)
for s in "${samples[@]}"; do
  ext=${s%%:*}
  # shellcheck disable=SC2086 # the options are words
  ffmpeg -nostdin -hide_banner -loglevel error -f lavfi -i testsrc=size=160x120:rate=10 \
    -f lavfi -i sine=frequency=440:sample_rate=44100 -t 3 ${s#*:} -y "$WORK/sample.$ext" ||
    fail "host ffmpeg could not make a .$ext sample"
  code=$(curl -s -o "$WORK/upload.out" -w '%{http_code}' -H "Authorization: Bearer $token" -F "file=@$WORK/sample.$ext" "$gw/upload")
  [[ $code == 200 && $(<"$WORK/upload.out") == "success!" ]] || fail "upload of .$ext: HTTP $code $(head -c 300 "$WORK/upload.out")"
done
log "uploaded ${#samples[@]} videos (${samples[*]%%:*})"

# One "ready" mail per upload, for this run's address only.
deadline=$(($(date +%s) + 240))
while :; do
  curl -fsS "${TEST_MAILDEV_URL:-http://127.0.0.1:1080}/email" >"$WORK/mail.json" || fail "maildev did not answer"
  mapfile -t fids < <(python3 - "$email" "$WORK/mail.json" <<'PY'
import json, re, sys
email, mails = sys.argv[1], json.load(open(sys.argv[2]))
for m in mails:
    if any(t.get("address") == email for t in m.get("to", [])):
        text = (m.get("subject") or "") + " " + (m.get("text") or "")
        if "failed" in text.lower():
            print("FAILED " + text.strip().replace("\n", " ")[:300])
        for fid in re.findall(r"mp3 file_id: ([0-9a-f]{24}) is now ready", text):
            print(fid)
PY
  )
  if printf '%s\n' "${fids[@]}" | grep -q '^FAILED'; then
    fail "a conversion failed: $(printf '%s\n' "${fids[@]}" | grep '^FAILED' | head -3)"
  fi
  mapfile -t fids < <(printf '%s\n' "${fids[@]}" | grep -E '^[0-9a-f]{24}$' | sort -u)
  ((${#fids[@]} >= ${#samples[@]})) && break
  (($(date +%s) < deadline)) || fail "only ${#fids[@]} of ${#samples[@]} ready mails within 240 s"
  sleep 1
done
((${#fids[@]} == ${#samples[@]})) || fail "${#fids[@]} ready mails for ${#samples[@]} uploads"
log "${#fids[@]} ready mails"

for fid in "${fids[@]}"; do
  code=$(curl -s -o "$WORK/out.mp3" -w '%{http_code}' -H "Authorization: Bearer $token" "$gw/download?fid=$fid")
  [[ $code == 200 ]] || fail "download of $fid: HTTP $code"
  read -r codec duration < <(ffprobe -v error -select_streams a:0 -show_entries stream=codec_name:format=duration \
    -of default=nw=1:nk=1 "$WORK/out.mp3" | paste -sd' ')
  [[ $codec == mp3 ]] || fail "download of $fid is not an MP3 (codec ${codec:-none})"
  awk -v d="$duration" 'BEGIN {exit !(d > 2.5 && d < 3.5)}' || fail "the MP3 of $fid lasts ${duration}s, the video 3 s"
done
log "${#fids[@]} MP3 downloads of about 3 s each"

# Someone else's token finds nothing: the containerised auth and gateway share one JWT secret of
# their own (generated by pods-up), not the placeholder.
forged=$(python3 - <<'PY'
import base64, hashlib, hmac, json, time
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b64(json.dumps({"username": "x@example.com", "admin": True, "iat": int(time.time()), "exp": int(time.time()) + 600}).encode())
key = b"dev-placeholder-jwt-secret-change-me-not-for-production"
print(f"{h}.{p}.{b64(hmac.new(key, f'{h}.{p}'.encode(), hashlib.sha256).digest())}")
PY
)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $forged" -F "file=@$WORK/sample.mkv" "$gw/upload")
[[ $code == 403 ]] || fail "a token signed with the repository's placeholder JWT secret got HTTP $code (want 403)"

python3 scripts/pods_play.py inspect --name "$NAME" --play "$(pods_state_dir "$NAME")/play.yaml" ||
  fail "a container does not run as its manifest says"
log "PASS: tutorial flow against the containerised suite (${#samples[@]} formats), containers as their manifests say"
