"""The target's half of a push (docs/target-agent.md): the shell text the collector types on
the target's console to find a place and the tools, and the receiver that takes the files.

The console may translate CR/LF, strip the eighth bit, or drop bytes (no flow control), so
everything sent is printable ASCII in short lines: base64 chunks, each with a hash the
target's own `md5sum` (or `sha256sum`) checks before the chunk is kept; a bad or lost chunk is
asked for again (go-back-N from the first one missing), and a file is decoded, checked whole
against its sha256 and only then renamed into place, so a damaged push is never run.  Nothing
typed contains the reply marker itself (it is assembled at run time), so the echo of a typed
line is never taken for a reply.

capture/push.py drives it; this module holds the text and the line formats both ends agree on.
"""

import base64
import gzip
import hashlib
import re
import shlex

MARK = "KTPUSH"  # every reply line starts with it
_MARK_SH = "m=KT; m=${m}PUSH"  # the marker as the target's shell makes it
CHUNK_BYTES = 720  # file bytes per chunk: 960 base64 characters, a line well under 1024
HASH_CHARS = 8  # hex digits of a chunk's hash the receiver checks
ACK_SALT = 999999  # a reply carries its number twice: n and ACK_SALT - n
DIR_CANDIDATES = ('"${TMPDIR:-/tmp}"', "/dev/shm", "/run", "/var/tmp")
PUSH_DIR_NAME = "kexectest-push"  # + "-<uid>" under the first candidate that takes the push
TOOLS = ("base64", "md5sum", "sha256sum", "gzip", "stty")
PYTHONS = ("python3", "/usr/libexec/platform-python")
RECEIVER_NAME = ".receiver.sh"


def probe_dir_command(need_kib: int) -> str:
    """A command line that finds a directory the push fits in: replies `dir PATH`, or `nodir`
    followed by each candidate's reason (read-only, full, missing)."""
    script = (
        f'need=$1; {_MARK_SH}; uid=$(id -u 2>/dev/null || echo x); why=""; '
        f"for base in {' '.join(DIR_CANDIDATES)}; do "
        f'd="$base/{PUSH_DIR_NAME}-$uid"; '
        'if [ ! -d "$base" ]; then why="$why;$base: missing"; continue; fi; '
        'if [ ! -d "$d" ]; then e=$(mkdir -m 700 "$d" 2>&1) || '
        '{ why="$why;$base: ${e##*: }"; continue; }; fi; '
        'if [ -L "$d" ] || [ ! -O "$d" ]; then why="$why;$base: $d is not ours"; continue; fi; '
        'e=$( (: >"$d/.probe") 2>&1) || { why="$why;$base: ${e##*: }"; continue; }; '
        'rm -f "$d/.probe"; set -- $(df -Pk "$d" 2>/dev/null | tail -n 1); '
        'if [ -n "$4" ] && [ "$4" -lt "$need" ] 2>/dev/null; then '
        'why="$why;$base: only $4 KiB free (the push needs $need KiB)"; continue; fi; '
        'echo "$m dir $d"; exit 0; done; echo "$m nodir$why"')
    return f"sh -c '{script}' kt {int(need_kib)}"


def probe_tools_command() -> str:
    """A command line that says what the target has: the user, a Python 3.6+ (`python3 -V`
    starts no interpreter session), kexec-tools and the shell tools a push uses."""
    script = (
        f'{_MARK_SH}; py=""; pyv=""; '
        f"for p in {' '.join(PYTHONS)}; do v=$(\"$p\" -V 2>&1) || continue; case $v in "
        '"Python 3."[6-9]* | "Python 3."[1-9][0-9]*) py=$(command -v "$p"); pyv=${v#Python }; '
        "break ;; esac; done; "
        'k=$(command -v kexec 2>/dev/null); for p in /sbin/kexec /usr/sbin/kexec; do '
        '[ -z "$k" ] && [ -x "$p" ] && k=$p; done; t=""; '
        f"for x in {' '.join(TOOLS)}; do command -v $x >/dev/null 2>&1 && t=\"$t,$x\"; done; "
        'echo "$m tools uid=$(id -u) python=$py pyver=$pyv kexec=$k have=${t#,} end"')
    return f"sh -c '{script}'"


# The receiver, run as `sh DIR/.receiver.sh DIR CHUNK_HASH FILE_HASH` with the console as its
# standard input.  Frames: `F NAME CHUNKS DIGEST gz|raw`, `C SEQ HASH BASE64`, `Q`.  Replies:
# ready, have NAME, from NAME K, ok N C, want N C, done NAME DIGEST, broken NAME WHY,
# fail NAME WHY, bye.
RECEIVER = r"""# kexectest push receiver (docs/target-agent.md); reads the collector's frames
set -f
d=$1; CH=$2; FH=$3
m=KT; m=${m}PUSH
cr=$(printf '\r')
old=$(stty -g 2>/dev/null)
stty -echo 2>/dev/null
trap 'stty "$old" 2>/dev/null' EXIT
trap 'exit 1' INT TERM HUP
name=''; n=0; next=0; nag=0
say() { echo "$m $*"; }
ack() { say "$1" "$2" $((@SALT@ - $2)); }
good() {
    printf '%s' "$2" | $CH >"$d/.hash" || fail
    read -r c _ <"$d/.hash"
    [ "${c%"${c#@HASHQ@}"}" = "$1" ]
}
fail() {
    set -- $(df -Pk "$d" 2>/dev/null | tail -n 1)
    if [ -w "$d" ]; then say fail "$name" "no space left on the target's $d (${4:-?} KiB free)"
    else say fail "$name" "the target's $d is not writable (read-only?)"; fi
    exit 1
}
finish() {
    new="$d/.$name.new"
    if [ "$z" = gz ]; then base64 -d <"$part" | gzip -dc >"$new"; else base64 -d <"$part" >"$new"; fi
    s=$($FH <"$new")
    s=${s%% *}
    if [ "$s" = "$sum" ]; then
        mv -f "$new" "$d/$name" || fail
        rm -f "$part"
        say done "$name" "$s"
    else
        rm -f "$part" "$new"
        say broken "$name" "${s:-undecodable}"
    fi
    name=''
}
say ready
while IFS= read -r l; do
    l=${l%"$cr"}
    set -- $l
    case ${1:-} in
        F)
            name=$2; n=$3; sum=$4; z=$5; part="$d/.$2.$4.b64"; nag=0
            case $name$n$sum$z in *[!A-Za-z0-9._-]* | '') say broken "$name" bad-frame; name=''; continue ;; esac
            if [ -f "$d/$name" ] && [ "$($FH <"$d/$name")" = "$sum  -" ]; then
                say have "$name"; name=''; continue
            fi
            for f in "$d/.$name".*.b64; do [ "$f" = "$part" ] || rm -f "$f"; done
            next=0
            [ -f "$part" ] && next=$(wc -l <"$part")
            next=$((next))
            if [ "$next" -ge "$n" ]; then finish; else say from "$name" "$next"; fi
            ;;
        C)
            [ -n "$name" ] || continue
            if [ "$2" = "$next" ] && good "$3" "$4"; then
                printf '%s\n' "$4" >>"$part" || fail
                next=$((next + 1)); nag=0
                ack ok "$2"
                [ "$next" = "$n" ] && finish
            elif [ "$2" = "$next" ]; then
                ack want "$next"; nag=1
            elif [ "$2" -lt "$next" ] 2>/dev/null; then
                ack ok $((next - 1))
            elif [ "$nag" = 0 ]; then
                ack want "$next"; nag=1
            fi
            ;;
        Q) say bye; exit 0 ;;
        '') ;;
        *) if [ -n "$name" ] && [ "$nag" = 0 ]; then ack want "$next"; nag=1; fi ;;
    esac
done
""".replace("@SALT@", str(ACK_SALT)).replace("@HASHQ@", "?" * HASH_CHARS)


END_LINE = "KT-END-OF-RECEIVER"  # ends the typed receiver (an end-of-file, ^D, would be read
#                                   as a plain byte by a shell whose line editor had the console)


def receiver_text() -> str:
    """The receiver as it is typed and stored: its non-blank lines (a console that doubles line
    ends adds blank lines, which the writer drops)."""
    return "".join(line + "\n" for line in RECEIVER.splitlines() if line.strip())


def writer_command(path: str) -> str:
    """A command line that stores the lines typed after it in PATH, up to END_LINE."""
    script = ('cr=$(printf "\\r"); while IFS= read -r l; do l=${l%"$cr"}; '
              f'[ "$l" = {END_LINE} ] && break; [ -n "$l" ] && printf "%s\\n" "$l"; '
              'done >"$1"')
    return f"sh -c '{script}' kt {shlex.quote(path)}"


def start_command(directory: str, chunk_tool: str, file_tool: str) -> str:
    """Checks the typed receiver against its hash, then runs it on the console: replies
    `recv bad` (type it again) or the receiver's `ready`."""
    want = digest(file_tool, receiver_text().encode("ascii"))
    script = (f'{_MARK_SH}; [ "$({file_tool} <"$1/{RECEIVER_NAME}")" = "{want}  -" ] || '
              f'{{ echo "$m recv bad"; exit 1; }}; exec sh "$1/{RECEIVER_NAME}" "$1" '
              f'{chunk_tool} {file_tool}')
    return f"sh -c '{script}' kt {shlex.quote(directory)}"


def tool_algorithm(tool: str) -> str:
    return {"md5sum": "md5", "sha256sum": "sha256"}[tool]


def digest(tool: str, data: bytes) -> str:
    return hashlib.new(tool_algorithm(tool), data).hexdigest()


# -- frames -------------------------------------------------------------------------------------

def encode_file(data: bytes, compress: bool) -> list:
    """The base64 chunks of a file (gzip first where the target can undo it)."""
    body = gzip.compress(data, compresslevel=9, mtime=0) if compress else data
    return [base64.b64encode(body[i:i + CHUNK_BYTES]).decode("ascii")
            for i in range(0, len(body), CHUNK_BYTES)] or [""]


def file_frame(name: str, chunks: int, file_digest: str, compress: bool) -> str:
    return f"F {name} {chunks} {file_digest} {'gz' if compress else 'raw'}"


def chunk_frame(seq: int, text: str, chunk_tool: str) -> str:
    return f"C {seq} {digest(chunk_tool, text.encode('ascii'))[:HASH_CHARS]} {text}"


QUIT_FRAME = "Q"

REPLY_RE = re.compile(MARK + r" (ready|have|from|ok|want|done|broken|fail|bye|dir|nodir|tools"
                      r"|recv)\b ?(.*)")


def parse_reply(line: str):
    """(kind, words) for a reply line, None for anything else; ok/want replies whose check
    number does not match are None too (a garbled reply is no reply)."""
    m = REPLY_RE.search(line)
    if m is None:
        return None
    kind, rest = m.group(1), m.group(2).strip()
    if kind in ("ok", "want"):
        words = rest.split()
        if (len(words) != 2 or not all(w.isdigit() for w in words)
                or int(words[0]) + int(words[1]) != ACK_SALT):
            return None
        return kind, [int(words[0])]
    return kind, rest.split() if kind not in ("dir", "nodir", "fail", "broken") else [rest]


def parse_tools(words) -> dict:
    """The `tools` reply as a dict; None when the line was cut (no `end`)."""
    if not words or words[-1] != "end":
        return None
    out = {}
    for w in words[:-1]:
        key, _, value = w.partition("=")
        out[key] = value
    out["have"] = [t for t in out.get("have", "").split(",") if t]
    return out
