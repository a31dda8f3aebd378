#!/bin/sh
# kexectest shell agent, kexectest @VERSION@: the "before" snapshot and the payload's load through
# kexec-tools on a machine under test with a POSIX shell and coreutils or busybox, and no Python.
#
#   sh kexectest-agent.sh snapshot                   print the KTSNAP block and exit
#   sh kexectest-agent.sh load PAYLOAD [--exec --yes] [--no-snapshot] [--dry-run]
#
# Made by `kexectest pack` from target/shell_agent.sh and the tables of the Python modules it
# stands in for (snapshot keys, preflight wording, exit codes); do not edit, make it again.
# The lines it prints are those of target/snapshot.py (docs/snapshot-format.md), checksums
# included; tests/test_shell_agent.py holds the two equal on the same machine.

LC_ALL=C
export LC_ALL
unset CDPATH
START=$PWD   # relative paths given on the command line are from here; the agent works from /
case $0 in */*) HERE=${0%/*} ;; *) HERE=. ;; esac
case $HERE in /*) ;; *) HERE=$START/$HERE ;; esac
cd / || exit @EXIT_BAD_INPUT@

NL='
'
LINES=''     # the block's line bodies so far, one per line, without their checksums
NLINES=0

die() {  # die CODE MESSAGE: one line on stderr, the exit code of errors.Exit
    printf 'kexectest: error: %s\n' "$2" >&2
    exit "$1"
}

warn() {
    printf 'kexectest: warning: %s\n' "$1" >&2
}

# -- reading files as target/snapshot.py's _read: the text, stripped; status 1 if unreadable

rd() {
    R=''
    [ -e "$1" ] || return 1
    { _first=1
      while IFS= read -r _l || [ -n "$_l" ]; do
          if [ "$_first" = 1 ]; then R=$_l; _first=0; else R="$R$NL$_l"; fi
          _l=''
      done
      true
    } 2>/dev/null <"$1" || return 1
    while :; do case $R in [[:space:]]*) R=${R#?} ;; *) break ;; esac; done
    while :; do case $R in *[[:space:]]) R=${R%?} ;; *) break ;; esac; done
    return 0
}

# link_name PATH: L = the name of what a sysfs symlink points to; status 1 when not a link
link_name() {
    L=''
    [ -L "$1" ] || return 1
    if cd -P "$1" 2>/dev/null; then
        L=${PWD##*/}
        cd /
    else
        L=$(readlink "$1")
        L=${L##*/}
    fi
    return 0
}

is_bdf() {  # a PCI function's name with its domain: 0000:00:1f.2
    case $1 in
        *:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f].[0-7]) ;;
        *) return 1 ;;
    esac
    _dom=${1%%:*}
    [ "${1#"$_dom":}" != "$1" ] && [ ${#_dom} -ge 4 ] || return 1
    case $_dom in *[!0-9a-f]*) return 1 ;; esac
    case ${1#"$_dom":} in *:*:*) return 1 ;; esac
    return 0
}

# nearest_pci NODE: P = the last PCI function in the node's resolved path (none: empty)
nearest_pci() {
    P=''
    cd -P "$1" 2>/dev/null || return 0
    _path=$PWD
    cd /
    _old_ifs=$IFS
    IFS=/
    for _part in $_path; do
        if is_bdf "$_part"; then P=$_part; fi
    done
    IFS=$_old_ifs
}

# -- formatting: values as snapshot.quote, lines as snapshot._line

hexval() {  # hexval NUMBER [DIGITS]: H = 0x..., lower case, at least DIGITS digits
    # shell arithmetic rather than $(printf): no process per value (a fork is dear on a slow
    # machine, and a snapshot has a hundred values)
    _hx=$(($1))
    if [ "$_hx" -lt 0 ]; then  # 2^63 and above: beyond the shell's arithmetic
        H=$(printf "0x%0${2:-1}x" "$1")
        return
    fi
    H=''
    while [ "$_hx" -gt 0 ]; do
        case $((_hx % 16)) in
            10) H=a$H ;; 11) H=b$H ;; 12) H=c$H ;; 13) H=d$H ;; 14) H=e$H ;; 15) H=f$H ;;
            *) H=$((_hx % 16))$H ;;
        esac
        _hx=$((_hx / 16))
    done
    while [ ${#H} -lt "${2:-1}" ]; do H=0$H; done
    H=0x$H
}

quote() {  # Q = the value as printed: bare when safe, else "double-quoted"
    case $1 in
        '' | *[\ \"\\]* | *[![:print:]]*) ;;
        *) Q=$1; return ;;
    esac
    case $1 in
        *[![:print:]]*)
            # bytes outside printable ASCII: \xNN of each byte of its UTF-8 (invalid UTF-8
            # as U+FFFD, as Python's decode(errors="replace") gives it)
            Q=$(printf '%s' "$1" | od -An -v -tu1 | awk '
                function out(b) { if (b == 34 || b == 92) printf "\\%c", b
                                  else if (b >= 32 && b <= 126) printf "%c", b
                                  else printf "\\x%02x", b }
                function bad() { printf "\\xef\\xbf\\xbd" }
                { for (i = 1; i <= NF; i++) buf[n++] = $i + 0 }
                END {
                    printf "\""
                    i = 0
                    while (i < n) {
                        b = buf[i]
                        if (b < 128) { out(b); i++; continue }
                        need = 0; lo = 128; hi = 191
                        if (b >= 194 && b <= 223) need = 1
                        else if (b >= 224 && b <= 239) { need = 2
                            if (b == 224) lo = 160; if (b == 237) hi = 159 }
                        else if (b >= 240 && b <= 244) { need = 3
                            if (b == 240) lo = 144; if (b == 244) hi = 143 }
                        if (need == 0) { bad(); i++; continue }
                        k = 1
                        while (k <= need && i + k < n) {
                            c = buf[i + k]
                            if (k == 1 && (c < lo || c > hi)) break
                            if (k > 1 && (c < 128 || c > 191)) break
                            k++
                        }
                        if (k <= need) { bad(); i += k; continue }
                        for (j = 0; j <= need; j++) printf "\\x%02x", buf[i + j]
                        i += need + 1
                    }
                    printf "\""
                }')
            ;;
        *)
            _qs=$1
            Q=''
            while :; do
                case $_qs in
                    *[\"\\]*)
                        _qpre=${_qs%%[\"\\]*}
                        _qrest=${_qs#"$_qpre"}
                        _qc=${_qrest%"${_qrest#?}"}
                        Q="$Q$_qpre\\$_qc"
                        _qs=${_qrest#?}
                        ;;
                    *) Q=$Q$_qs; break ;;
                esac
            done
            Q="\"$Q\""
            ;;
    esac
}

BODY=''
begin_line() { BODY="@PREFIX@ $1"; }
field() { quote "$2"; BODY="$BODY $1=$Q"; }
end_line() {
    if [ -z "$LINES" ]; then LINES=$BODY; else LINES="$LINES$NL$BODY"; fi
    NLINES=$((NLINES + 1))
}

# -- the block, kind by kind (docs/snapshot-format.md, target/snapshot.py's format_lines)

read_kernel() {
    begin_line kernel
    rd /proc/sys/kernel/osrelease && field release "$R" || field release "$(uname -r)"
    field machine "$(uname -m)"
    if rd /proc/cmdline; then field cmdline "$R"; else field cmdline ''; fi
    end_line
    begin_line boot
    if [ -e /sys/firmware/efi ]; then field mode efi; else field mode bios; fi
    end_line
}

MEMMAP=''   # "start end type" lines, for basemem
read_memmap() {
    _root=/sys/firmware/memmap
    [ -d "$_root" ] || return 0
    _max=-1
    for _d in "$_root"/*; do
        _n=${_d##*/}
        case $_n in '' | *[!0-9]*) continue ;; esac
        [ "$_n" -gt "$_max" ] && _max=$_n
    done
    _n=0
    _i=0
    while [ "$_n" -le "$_max" ]; do
        _d=$_root/$_n
        _n=$((_n + 1))
        [ -d "$_d" ] || continue
        rd "$_d/start" || continue
        _start=$R
        rd "$_d/end" || continue
        _end=$R
        rd "$_d/type" || R=''
        case $_start$_end in *[!0-9a-fA-Fx]*) continue ;; esac
        begin_line memmap
        field i "$_i"
        hexval "$_start"; field start "$H"
        hexval "$_end"; field end "$H"
        field type "$R"
        end_line
        MEMMAP="$MEMMAP$(($_start)) $(($_end)) $R$NL"
        _i=$((_i + 1))
    done
}

E820=''
E820_SOURCE=none
read_e820() {
    _msgs=''
    if (exec 3</dev/kmsg) 2>/dev/null && dd if=/dev/null iflag=nonblock 2>/dev/null; then
        # every record still in the kernel log, read without blocking (as the Python agent)
        _msgs=$(dd if=/dev/kmsg iflag=nonblock bs=16384 2>/dev/null | sed -n 's/^[0-9][^;]*;//p')
        E820_SOURCE=kmsg
    elif _msgs=$(dmesg 2>/dev/null); then
        E820_SOURCE=dmesg
    else
        E820_SOURCE=none
    fi
    E820=$(printf '%s\n' "$_msgs" | sed -n \
        's/.*BIOS-e820: \[mem 0x\([0-9a-fA-F][0-9a-fA-F]*\)-0x\([0-9a-fA-F][0-9a-fA-F]*\)\] \(.*[^[:space:]]\)[[:space:]]*$/\1 \2 \3/p')
    if [ -z "$E820" ] && [ "$E820_SOURCE" != none ]; then E820_SOURCE="$E820_SOURCE-empty"; fi
    _i=0
    while read -r _s _e _t; do
        [ -n "$_s" ] || continue
        begin_line e820
        field i "$_i"
        hexval "0x$_s"; field start "$H"
        hexval "0x$_e"; field end "$H"
        field type "$_t"
        end_line
        _i=$((_i + 1))
    done <<EOF
$E820
EOF
    begin_line e820-source
    field kind "$E820_SOURCE"
    end_line
}

read_edd() {
    for _d in /sys/firmware/edd/int13_dev*; do
        [ -d "$_d" ] || continue
        begin_line edd
        field dev "${_d##*/int13_dev}"
        for _k in @EDD_KEYS@; do
            rd "$_d/$_k" || continue
            # multi-line values joined with "; " (each line stripped, empty ones left out)
            _v=''
            _old_ifs=$IFS
            IFS=$NL
            for _ln in $R; do
                IFS=$_old_ifs
                R=$_ln
                while :; do case $R in [[:space:]]*) R=${R#?} ;; *) break ;; esac; done
                while :; do case $R in *[[:space:]]) R=${R%?} ;; *) break ;; esac; done
                [ -n "$R" ] || continue
                if [ -z "$_v" ]; then _v=$R; else _v="$_v; $R"; fi
            done
            IFS=$_old_ifs
            field "$_k" "$_v"
        done
        link_name "$_d/pci_dev" && field pci_dev "$L"
        end_line
    done
}

read_dmi() {
    begin_line dmi
    _any=0
    for _k in @DMI_KEYS@; do
        rd "/sys/class/dmi/id/$_k" || continue
        field "$_k" "$R"
        _any=1
    done
    [ "$_any" = 1 ] && end_line
}

read_pci() {
    for _d in /sys/bus/pci/devices/*; do
        [ -e "$_d" ] || continue
        begin_line pci
        field bdf "${_d##*/}"
        rd "$_d/vendor" && hexval "$R" 4 && field vendor "$H"
        rd "$_d/device" && hexval "$R" 4 && field device "$H"
        rd "$_d/class" && hexval "$R" 6 && field class "$H"
        _cmd=$(od -An -tu1 -j4 -N2 "$_d/config" 2>/dev/null)
        set -- $_cmd
        [ $# = 2 ] && hexval $(($1 + 256 * $2)) 4 && field cmd "$H"
        if link_name "$_d/driver"; then
            field driver "$L"
            link_name "$_d/driver/module" && _mod=$L || _mod=''
        else
            field driver ''
            _mod=''
        fi
        [ -n "$_mod" ] && field module "$_mod"
        rd "$_d/power_state" && field power "$R"
        rd "$_d/boot_vga" && case $R in *[!0-9]* | '') ;; *) field boot_vga "$R" ;; esac
        end_line
    done
}

read_modules() {
    rd /proc/modules || return 0
    _i=0
    _chunk=''
    _old_ifs=$IFS
    IFS=$NL
    for _ln in $R; do
        IFS=$_old_ifs
        set -- $_ln
        [ $# -gt 0 ] || continue
        if [ -n "$_chunk" ] && [ $((${#_chunk} + 1 + ${#1})) -gt @MODULES_PER_LINE@ ]; then
            begin_line modules; field i "$_i"; field names "$_chunk"; end_line
            _i=$((_i + 1))
            _chunk=''
        fi
        if [ -z "$_chunk" ]; then _chunk=$1; else _chunk="$_chunk,$1"; fi
    done
    IFS=$_old_ifs
    begin_line modules; field i "$_i"; field names "$_chunk"; end_line
}

device_of() {  # the device fields of a class device (drm card, fb): what it sits on
    link_name "$1/device" && field device "$L"
    link_name "$1/device/subsystem" && field subsystem "$L"
    link_name "$1/device/driver" && field driver "$L"
}

numbered() {  # numbered DIR PREFIX: the entries PREFIXn of DIR, in number order
    _max=-1
    for _d in "$1/$2"*; do
        _n=${_d##*/"$2"}
        case $_n in '' | *[!0-9]*) continue ;; esac
        [ "$_n" -gt "$_max" ] && _max=$_n
    done
    NUMBERED=''
    _n=0
    while [ "$_n" -le "$_max" ]; do
        [ -e "$1/$2$_n" ] && NUMBERED="$NUMBERED $2$_n"
        _n=$((_n + 1))
    done
}

read_display() {
    numbered /sys/class/drm card
    for _id in $NUMBERED; do
        begin_line drm
        field id "$_id"
        device_of "/sys/class/drm/$_id"
        end_line
    done
    numbered /sys/class/graphics fb
    for _id in $NUMBERED; do
        _f=/sys/class/graphics/$_id
        begin_line fb
        field id "$_id"
        rd "$_f/name" && field name "$R"
        device_of "$_f"
        end_line
    done
}

read_block() {
    for _d in /sys/block/*; do
        [ -e "$_d/device" ] || continue
        _name=${_d##*/}
        begin_line block
        field name "$_name"
        _sectors=''
        rd "$_d/size" && case $R in '' | *[!0-9]*) ;; *) _sectors=$R; field sectors "$R" ;; esac
        rd "$_d/removable" && case $R in '' | *[!0-9]*) ;; *) field removable "$R" ;; esac
        nearest_pci "$_d"
        [ -n "$P" ] && field pci "$P"
        # the MBR signature, only where there is a medium and never from an optical drive
        rd "$_d/device/type" || R=''
        if [ -n "$_sectors" ] && [ "$_sectors" != 0 ] && [ "$R" != @SCSI_TYPE_ROM@ ]; then
            _sig=$(od -An -tu1 -j440 -N4 "/dev/$_name" 2>/dev/null)
            set -- $_sig
            [ $# = 4 ] && hexval $(($1 + 256 * $2 + 65536 * $3 + 16777216 * $4)) 8 \
                && field mbr_signature "$H"
        fi
        end_line
    done
}

read_input() {
    numbered /sys/class/input input
    for _id in $NUMBERED; do
        _n=/sys/class/input/$_id
        begin_line input
        field id "$_id"
        rd "$_n/name" && field name "$R"
        rd "$_n/phys" && [ -n "$R" ] && field phys "$R"
        rd "$_n/capabilities/ev" && case $R in '' | *[!0-9a-fA-F]*) ;; *)
            hexval "0x$R"; field ev "$H" ;; esac
        nearest_pci "$_n"
        [ -n "$P" ] && field pci "$P"
        end_line
    done
}

read_basemem() {  # from the first usable range at 0, e820 before memmap
    _kib=''
    while read -r _s _e _t; do
        [ -n "$_s" ] && [ $((0x$_s)) = 0 ] && [ "$_t" = usable ] || continue
        _kib=$(( ( $((0x$_e)) + 1 < 655360 ? $((0x$_e)) + 1 : 655360 ) / 1024 ))
        _src=e820
        break
    done <<EOF
$E820
EOF
    if [ -z "$_kib" ]; then
        while read -r _s _e _t; do
            [ -n "$_s" ] && [ "$_s" = 0 ] && [ "$_t" = "System RAM" ] || continue
            _kib=$(( ( _e + 1 < 655360 ? _e + 1 : 655360 ) / 1024 ))
            _src=memmap
            break
        done <<EOF
$MEMMAP
EOF
    fi
    [ -n "$_kib" ] || return 0
    begin_line basemem; field kib "$_kib"; field source "$_src"; end_line
}

snapshot() {
    begin_line begin; field v @SNAP_VERSION@; end_line
    read_kernel
    read_memmap
    read_e820
    read_edd
    read_dmi
    read_pci
    read_modules
    read_display
    read_block
    read_input
    read_basemem
    begin_line end; field lines $((NLINES + 1)); end_line
    # each line's checksum (docs/trace-format.md: Fletcher-16 mod 256 over the line's bytes)
    _sums=$(printf '%s\n' "$LINES" | od -An -v -tu1 | awk '
        { for (i = 1; i <= NF; i++) { b = $i + 0
            if (b == 10) { printf "%04X\n", s2 * 256 + s1; s1 = 0; s2 = 0 }
            else { s1 = (s1 + b) % 256; s2 = (s2 + s1) % 256 } } }')
    set -- $_sums
    while IFS= read -r _ln; do
        printf '%s ~%s\n' "$_ln" "$1"
        shift
    done <<EOF
$LINES
EOF
}

# -- preflight (target/loader.py's preflight, for kexec-tools: the same words)

preflight() {
    _uid=''
    _cap=0
    while read -r _k _v _e _rest; do
        case $_k in
            Uid:) _uid=$_e ;;   # real, effective, saved, file system
            CapEff:) _cap=$(( (0x$_v >> @CAP_SYS_BOOT@) & 1 )) ;;
        esac
    done </proc/self/status
    ERRORS=''
    if [ "$_cap" != 1 ]; then
        euid=${_uid:-$(id -u)}
        if [ "$euid" != 0 ]; then
            ERRORS="${ERRORS}@MSG_not_root@$NL"
        else
            ERRORS="${ERRORS}@MSG_no_cap_sys_boot@$NL"
        fi
    fi
    if [ -d /sys/kernel ] && [ ! -e /sys/kernel/kexec_loaded ]; then
        ERRORS="${ERRORS}@MSG_no_kexec_in_kernel@$NL"
    fi
    rd /proc/sys/kernel/kexec_load_disabled && [ "$R" = 1 ] && ERRORS="${ERRORS}@MSG_load_disabled@$NL"
    if rd /sys/kernel/security/lockdown; then
        lockdown=${R#*[}
        lockdown=${lockdown%%]*}
        case $lockdown in
            integrity | confidentiality) ERRORS="${ERRORS}@MSG_lockdown@$NL" ;;
        esac
    fi
    rd /proc/sys/kernel/kexec_load_limit_reboot && [ "$R" = 0 ] \
        && ERRORS="${ERRORS}@MSG_load_limit_spent@$NL"
    [ -e /sys/firmware/efi ] && warn "@MSG_efi@"
    KEXEC=$(command -v kexec 2>/dev/null)
    [ -n "$KEXEC" ] || ERRORS="${ERRORS}@MSG_no_kexec_tools@$NL"
    [ -z "$ERRORS" ] || die @EXIT_KEXEC_REFUSED@ "${ERRORS%%"$NL"*}"
}

# -- the payload's ELF header, read by hand (target/elf.py's reading, for what a load prints)

grab() {  # grab OFFSET LENGTH: B = the payload's bytes there, as decimal numbers
    _len=$2
    B=$(od -An -v -tu1 -j"$1" -N"$2" "$PAYLOAD" 2>/dev/null)
    set -- $B
    [ $# = "$_len" ] || die @EXIT_BAD_INPUT@ "$PAYLOAD: truncated or corrupt ELF (a header lies past the end)"
}

le() {  # le INDEX SIZE: N = the little-endian SIZE-byte number at INDEX (from 0) of B
    _at=$1
    _k=$2
    set -- $B
    N=0
    while [ "$_k" -gt 0 ]; do
        _k=$((_k - 1))
        eval "_byte=\${$((_at + _k + 1))}"
        N=$((N * 256 + _byte))
    done
}

payload_facts() {  # ENTRY, NSEG (PT_LOAD headers) and the payload's id, as the Python agent's
    [ -e "$PAYLOAD" ] || die @EXIT_BAD_INPUT@ "$PAYLOAD: no such file"
    [ ! -d "$PAYLOAD" ] || die @EXIT_BAD_INPUT@ "$PAYLOAD: is a directory, not an ELF file"
    [ -r "$PAYLOAD" ] || die @EXIT_BAD_INPUT@ "$PAYLOAD: cannot read: Permission denied"
    [ -s "$PAYLOAD" ] || die @EXIT_BAD_INPUT@ "$PAYLOAD: empty file"
    grab 0 52
    set -- $B
    [ "$1 $2 $3 $4" = "127 69 76 70" ] || die @EXIT_BAD_INPUT@ "$PAYLOAD: not an ELF file"
    case $5 in 1) _width=32 ;; 2) _width=64 ;; *) _width='?' ;; esac
    le 18 2
    [ "$5 $6 $N" = "1 1 3" ] || die @EXIT_BAD_INPUT@ \
        "$PAYLOAD: not an i386 payload (ELF$_width machine $N); expected ELF32 EM_386"
    le 24 4; ENTRY=$N
    le 28 4; _phoff=$N
    le 32 4; _shoff=$N
    le 42 2; _phentsize=$N
    le 44 2; _phnum=$N
    le 46 2; _shentsize=$N
    le 48 2; _shnum=$N
    NSEG=0
    if [ "$_phnum" -gt 0 ]; then
        grab "$_phoff" $((_phnum * _phentsize))
        set -- $B
        _i=0
        while [ "$_i" -lt "$_phnum" ]; do
            le $((_i * _phentsize)) 4
            [ "$N" = 1 ] && NSEG=$((NSEG + 1))
            _i=$((_i + 1))
        done
    fi
    PAYLOAD_ID=''
    if [ "$_shoff" -gt 0 ] && [ "$_shnum" -gt 0 ]; then
        grab "$_shoff" $((_shnum * _shentsize))
        _notes=''
        set -- $B
        _i=0
        while [ "$_i" -lt "$_shnum" ]; do
            le $((_i * _shentsize + 4)) 4
            if [ "$N" = 7 ]; then  # SHT_NOTE: offset and size
                le $((_i * _shentsize + 16)) 4; _off=$N
                le $((_i * _shentsize + 20)) 4
                _notes="$_notes $_off:$N"
            fi
            _i=$((_i + 1))
        done
        for _note in $_notes; do
            grab "${_note%:*}" "${_note#*:}"
            set -- $B
            _pos=0
            while [ $((_pos + 12)) -le "${_note#*:}" ]; do
                le "$_pos" 4; _namesz=$N
                le $((_pos + 4)) 4; _descsz=$N
                le $((_pos + 8)) 4; _type=$N
                _desc=$((_pos + 12 + (_namesz + 3) / 4 * 4))
                [ $((_desc + _descsz)) -le "${_note#*:}" ] || break
                if [ "$_type" = 3 ] && [ "$_namesz" = 4 ]; then  # NT_GNU_BUILD_ID, "GNU"
                    le $((_pos + 12)) 4
                    if [ "$N" = $((0x00554e47)) ]; then
                        PAYLOAD_ID=''
                        _k=0
                        while [ "$_k" -lt "$_descsz" ]; do
                            eval "_byte=\${$((_desc + _k + 1))}"
                            hexval "$_byte" 2
                            PAYLOAD_ID=$PAYLOAD_ID${H#0x}
                            _k=$((_k + 1))
                        done
                    fi
                fi
                _pos=$((_desc + (_descsz + 3) / 4 * 4))
            done
        done
    fi
    SHA=$(sha256sum "$PAYLOAD" 2>/dev/null) && SHA=${SHA%% *} || SHA=''
    [ -n "$PAYLOAD_ID" ] || PAYLOAD_ID=$(printf '%.16s' "$SHA")
}

first_line() {  # F = the first non-blank line of $1, stripped
    F=''
    _old_ifs=$IFS
    IFS=$NL
    for _ln in $1; do
        R=$_ln
        while :; do case $R in [[:space:]]*) R=${R#?} ;; *) break ;; esac; done
        while :; do case $R in *[[:space:]]) R=${R%?} ;; *) break ;; esac; done
        if [ -n "$R" ]; then F=$R; break; fi
    done
    IFS=$_old_ifs
}

load() {
    PAYLOAD=''
    _exec=0
    _yes=0
    _snap=1
    _dry=0
    while [ $# -gt 0 ]; do
        case $1 in
            --exec) _exec=1 ;;
            --yes) _yes=1 ;;
            --no-snapshot) _snap=0 ;;
            --dry-run) _dry=1 ;;
            --via=kexec-tools) ;;
            --via) [ "$2" = kexec-tools ] || die @EXIT_USAGE@ \
                       "the shell agent loads through kexec-tools only (--via kexec-tools)"
                   shift ;;
            --via=*) die @EXIT_USAGE@ "the shell agent loads through kexec-tools only (--via kexec-tools)" ;;
            --*) die @EXIT_USAGE@ "the shell agent does not take $1: it loads the payload as it is (patch it on the host: kexectest pack $1 ...)" ;;
            *) [ -z "$PAYLOAD" ] || die @EXIT_USAGE@ "one payload only (got $PAYLOAD and $1)"
               PAYLOAD=$1 ;;
        esac
        shift
    done
    if [ "$_exec" = 1 ] && [ "$_yes" != 1 ]; then
        _how=''
        [ -t 0 ] || _how=' (and there is no terminal here to ask at)'
        die @EXIT_USAGE@ "--exec ends the running system: add --yes to confirm$_how"
    fi
    [ -n "$PAYLOAD" ] || PAYLOAD=$HERE/kexec_test.elf
    case $PAYLOAD in /*) ;; *) PAYLOAD=$START/$PAYLOAD ;; esac
    payload_facts
    [ "$_snap" = 1 ] && snapshot
    preflight
    hexval "$ENTRY"; _entry=$H
    _what="$NSEG segment(s), entry $_entry, via kexec-tools (payload $PAYLOAD_ID)"
    if [ "$_dry" = 1 ]; then
        printf 'dry run: would load %s; patched payload sha256 %s\n' "$_what" "$SHA"
        return 0
    fi
    _out=$("$KEXEC" -l "$PAYLOAD" --type=elf-x86 2>&1) || {
        _rc=$?
        first_line "$_out"
        die @EXIT_KEXEC_REFUSED@ "kexec -l failed: ${F:-exit status $_rc}"
    }
    printf 'loaded %s\n' "$_what"
    if [ "$_exec" = 1 ]; then
        printf 'KTLOAD exec entry=%s via=kexec-tools\n' "$_entry"
        sync
        _out=$("$KEXEC" -e 2>&1)
        _rc=$?
        first_line "$_out"
        die @EXIT_KEXEC_REFUSED@ "kexec -e returned: ${F:-exit status $_rc}"
    fi
}

case ${1:-} in
    snapshot) snapshot ;;
    load) shift; load "$@" ;;
    --version) echo "kexectest @VERSION@ (shell agent)" ;;
    *) die @EXIT_USAGE@ "usage: sh kexectest-agent.sh snapshot | load PAYLOAD [--exec --yes] [--no-snapshot] [--dry-run]" ;;
esac
