//! The command line, defined once: parsing, --help, completions and man pages
//! all come from these types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;

use crate::kernel::pins::DEFAULT_ROOT;
use crate::kernel::tc::TcMethod;
use crate::kernel::xdp::XdpMode;
use crate::programs::capture;
use crate::programs::loaded::globals::{self, Assignment};
use crate::programs::lsm_monitor::events::{self, EventTypes};
use crate::programs::syscall_latency::MethodChoice;
use crate::programs::tc_classifier::flows::QueryArgs;
use crate::state::saved_rules::DEFAULT_STATE_DIR;

#[derive(Debug, Parser)]
#[command(
    name = "meshbpf",
    version,
    about = "Attach meshbpf's eBPF programs to interfaces and read what they count",
    long_about = "meshbpf carries its own CO-RE eBPF programs and loads them into the running kernel \
through libbpf. Attachments are pinned under a bpffs root and outlive the command that made them; \
every command reads its state back from those pins and the kernel.",
    after_help = "Exit status: 0 success, 1 failure, 2 usage error. With -j, errors are printed as {\"error\": ...} on stdout."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print JSON instead of tables
    #[arg(short, long, global = true)]
    pub json: bool,

    /// Print indented JSON (implies --json)
    #[arg(short, long, global = true)]
    pub pretty: bool,

    /// Log to stderr: -v shows libbpf's warnings and full verifier logs, -vv debug, -vvv trace
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Directory on a bpffs where meshbpf pins its state
    #[arg(long, global = true, value_name = "DIR", env = "MESHBPF_BPFFS", default_value = DEFAULT_ROOT)]
    pub bpffs: PathBuf,

    /// Directory where meshbpf keeps each filter's last settled rule set, which the boot unit
    /// applies (DIR/filter/IFACE.json)
    #[arg(long, global = true, value_name = "DIR", env = "MESHBPF_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach xdp_counter (or, with --filter, xdp_mesh_filter) and tc_classifier to an interface,
    /// or with --latency syscall_latency, with --lsm lsm_monitor host-wide; pinned
    Attach(AttachTarget),
    /// Detach meshbpf from an interface (or --latency) and remove every pin that belongs to it
    Detach(DetachTarget),
    /// Show packet and byte counters of meshbpf's attachments
    Stats(StatsArgs),
    /// Manage the rules of xdp_mesh_filter on an interface
    #[command(subcommand)]
    Filter(FilterCommand),
    /// Show the conversations crossing an interface, from tc_classifier's flow table
    Flows(FlowsArgs),
    /// Check lsm_monitor's policies, and replace the policy of the attached monitor
    #[command(subcommand)]
    Lsm(LsmCommand),
    /// Check the kernel, the machine and meshbpf's own state; probe every hook by loading a program
    #[command(
        long_about = "Checks what meshbpf needs (kernel version, BTF, bpffs, tracefs, capabilities, JIT, \
lockdown, the BPF LSM, kernel.bpf_stats_enabled), probes every hook by loading a minimal program and, where \
loading is not the whole story, attaching it to a throwaway target, and checks that every pin directory \
under the root belongs to a live attachment, that tables are not near capacity and that filters do not \
drop most of what they see.",
        after_help = "Exit status: 0 when the checks could run, whatever they found (the report says \
ok, degraded or fail); with --strict, 1 when any check fails. Warnings and unavailable hooks (status \
degraded) never fail, even with --strict."
    )]
    Health(HealthArgs),
    /// Load a compiled BPF object (.bpf.o) and pin its programs under loaded/NAME
    Load(LoadArgs),
    /// Detach every attachment of a loaded object and remove its programs and maps
    Unload(UnloadArgs),
    /// Show everything meshbpf manages: attachments and loaded objects, with programs, links and maps
    List,
    /// Show per-syscall latency (after `attach --latency`), or measure a kernel function's for a while
    Latency(LatencyArgs),
    /// Read lsm_monitor's security events (after `attach --lsm`): what its ring buffer holds, or
    /// with --follow until Ctrl-C
    Events(EventsArgs),
    /// Capture the packets xdp_mesh_filter decided (by verdict, rule, address, port, protocol) as
    /// pcapng that tcpdump and Wireshark read
    Capture(CaptureArgs),
    /// Serve Prometheus metrics (/metrics) and health (/healthz) over HTTP until SIGTERM or Ctrl-C
    Serve(ServeArgs),
    /// Print a shell completion script to stdout
    Completions(CompletionsArgs),
    /// Write man pages for meshbpf and each subcommand into a directory
    Man(ManArgs),
}

/// `attach`, as typed: each target with its own flags. Parsed through
/// [`AttachFlags`], whose groups make a flag of another target a usage error.
#[derive(Debug)]
pub enum AttachTarget {
    /// `attach IFACE`: xdp_counter or xdp_mesh_filter, and tc_classifier.
    Interface(InterfaceArgs),
    /// `attach --latency`: syscall_latency host-wide.
    Latency(LatencyTargetArgs),
    /// `attach --lsm`: lsm_monitor host-wide.
    Lsm(LsmTargetArgs),
    /// `attach [TARGET] --object NAME`: a program of a loaded object.
    Object(ObjectArgs),
}

#[derive(Debug)]
pub struct InterfaceArgs {
    pub interface: String,
    pub mode: Option<XdpMode>,
    pub options: InterfaceOptions,
    pub btf: Option<PathBuf>,
}

#[derive(Debug)]
pub struct LatencyTargetArgs {
    pub options: LatencyOptions,
    pub btf: Option<PathBuf>,
}

#[derive(Debug)]
pub struct LsmTargetArgs {
    pub policy: Option<PathBuf>,
    pub enforce: bool,
    pub btf: Option<PathBuf>,
}

#[derive(Debug)]
pub struct ObjectArgs {
    pub object: String,
    pub prog: Option<String>,
    /// The interface or cgroup directory; none for tracing hooks.
    pub target: Option<String>,
    pub mode: Option<XdpMode>,
}

/// The command line of `attach`. A target is chosen by its selector (IFACE,
/// `--latency`, `--lsm` or `--object`); its own flags are one group, and
/// [`TARGETS`] makes each flag of a group conflict with the other targets'
/// selectors, so that a new flag needs nothing beyond its place in a group.
#[derive(Debug, Args)]
#[group(skip)]
struct AttachFlags {
    /// Interface to attach to, in the current network namespace. With --object: the interface (xdp,
    /// tc), the cgroup v2 directory (cgroup_skb), or nothing (tracepoints, raw_tp, tp_btf, kprobe)
    #[arg(value_name = "IFACE", required_unless_present_any = ["object", "latency", "lsm"])]
    interface: Option<String>,

    /// XDP mode, of IFACE or of an --object's XDP program; native runs in the driver, skb (generic)
    /// works everywhere. There is no silent fallback. [default: native]
    #[arg(long, value_enum, value_name = "MODE", conflicts_with_all = ["latency", "lsm"])]
    mode: Option<XdpMode>,

    /// Kernel BTF to resolve CO-RE relocations against, for kernels without /sys/kernel/btf/vmlinux
    /// (not with --object: its programs were loaded by `meshbpf load`)
    #[arg(
        long,
        value_name = "FILE",
        env = "MESHBPF_BTF",
        conflicts_with = "object"
    )]
    btf: Option<PathBuf>,

    #[command(flatten, next_help_heading = "Interface (IFACE)")]
    interface_options: InterfaceOptions,

    /// Attach syscall_latency host-wide instead: per-syscall latency
    /// histograms, read with `meshbpf latency`
    #[arg(long, help_heading = "Syscall latency (--latency)")]
    latency: bool,

    #[command(flatten, next_help_heading = "Syscall latency (--latency)")]
    latency_options: LatencyOptions,

    #[command(flatten, next_help_heading = "Security events (--lsm)")]
    lsm: LsmFlags,

    #[command(flatten, next_help_heading = "Loaded object (--object)")]
    object: ObjectFlags,
}

/// The group of [`LatencyOptions`]; `--latency` joins it in `attach`.
const LATENCY_GROUP: &str = "latency_options";

/// Each target's group of flags, and the selectors of the targets they do
/// not belong to. The conflicts are set on each flag, not on the group:
/// clap's error then names the flags given, not every flag of a group.
/// IFACE is shared by the interface and --object targets, and so are
/// --mode (with the other selectors) and --btf (with all but --object),
/// which name their conflicts themselves.
const TARGETS: [(&str, &[&str]); 4] = [
    ("interface_options", &["latency", "lsm", "object"]),
    (LATENCY_GROUP, &["interface", "lsm", "object"]),
    ("lsm_target", &["interface", "latency", "object"]),
    ("object_target", &["latency", "lsm"]),
];

/// What `attach IFACE` does beyond xdp_counter.
#[derive(Debug, Args)]
#[group(id = "interface_options")]
pub struct InterfaceOptions {
    /// Attach xdp_mesh_filter with these rules instead of xdp_counter; on an
    /// attached interface, the program is swapped atomically (bpf_link update)
    #[arg(long, value_name = "RULES.json")]
    pub filter: Option<PathBuf>,

    /// Attach only the XDP program, without tc_classifier's flow table
    #[arg(long, conflicts_with = "classes")]
    pub no_flows: bool,

    /// Set QoS classes (skb->priority, skb->mark) on flows by these rules; on
    /// an attached interface, the classes in use are replaced atomically
    #[arg(long, value_name = "CLASSES.json")]
    pub classes: Option<PathBuf>,

    /// Size of the flow table; when full, the least recently used flow is evicted (and counted)
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=4_194_304))]
    pub max_flows: u32,

    /// How tc_classifier hooks ingress and egress; probed when not given
    #[arg(long, value_enum, value_name = "METHOD")]
    pub tc_method: Option<TcMethod>,
}

#[derive(Debug, Args)]
#[group(id = "lsm_target", requires = "lsm")]
struct LsmFlags {
    /// Attach lsm_monitor host-wide instead: exec, opens under watched paths, ptrace attach,
    /// capability use and module loads, read with `meshbpf events`. BPF LSM where the kernel runs
    /// it, else tracepoints (audit only)
    #[arg(long)]
    lsm: bool,

    /// lsm_monitor's policy (JSON): watched paths, what enforce mode denies, allow-lists.
    /// On an attached monitor it is replaced atomically
    #[arg(long, value_name = "POLICY.json")]
    policy: Option<PathBuf>,

    /// Deny what the policy denies (BPF LSM only) instead of auditing it
    #[arg(long, requires = "policy")]
    enforce: bool,
}

#[derive(Debug, Args)]
#[group(id = "object_target", requires = "object")]
struct ObjectFlags {
    /// Attach a program of an object loaded with `meshbpf load`, on the hook its section names
    #[arg(long, value_name = "NAME")]
    object: Option<String>,

    /// The program of --object to attach; may be left out when the object has one
    #[arg(long, value_name = "PROG")]
    prog: Option<String>,
}

impl AttachFlags {
    fn target(self) -> Result<AttachTarget, clap::Error> {
        let AttachFlags {
            interface,
            mode,
            btf,
            interface_options,
            latency,
            latency_options,
            lsm,
            object,
        } = self;
        if let Some(name) = object.object {
            return Ok(AttachTarget::Object(ObjectArgs {
                object: name,
                prog: object.prog,
                target: interface,
                mode,
            }));
        }
        if latency {
            return Ok(AttachTarget::Latency(LatencyTargetArgs {
                options: latency_options,
                btf,
            }));
        }
        if lsm.lsm {
            return Ok(AttachTarget::Lsm(LsmTargetArgs {
                policy: lsm.policy,
                enforce: lsm.enforce,
                btf,
            }));
        }
        match interface {
            Some(interface) => Ok(AttachTarget::Interface(InterfaceArgs {
                interface,
                mode,
                options: interface_options,
                btf,
            })),
            // clap requires IFACE without a selector; should a change of
            // the rules above let one through, it is still a usage error.
            None => Err(no_target("IFACE, --latency, --lsm or --object NAME")),
        }
    }
}

impl FromArgMatches for AttachTarget {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        AttachFlags::from_arg_matches(matches)?.target()
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for AttachTarget {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        with_targets(AttachFlags::augment_args(cmd))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        with_targets(AttachFlags::augment_args_for_update(cmd))
    }
}

/// Applies [`TARGETS`] to `attach`'s flags.
fn with_targets(cmd: clap::Command) -> clap::Command {
    // LatencyOptions is shared with `latency --function`, which selects it
    // otherwise; here --latency does.
    let mut cmd = cmd.mut_group(LATENCY_GROUP, |group| {
        group.arg("latency").requires("latency")
    });
    for (group, selectors) in TARGETS {
        let members: Vec<clap::Id> = cmd
            .get_groups()
            .find(|g| g.get_id() == group)
            .unwrap_or_else(|| panic!("attach has no group {group}"))
            .get_args()
            .cloned()
            .collect();
        for member in members {
            cmd = cmd.mut_arg(member, |arg| arg.conflicts_with_all(selectors));
        }
    }
    cmd
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Only this interface; every interface with a flow table when omitted
    #[arg(value_name = "IFACE")]
    pub interface: Option<String>,

    #[command(flatten)]
    pub query: QueryArgs,

    /// Keep going until Ctrl-C: JSON Lines with -j, a refreshing table otherwise
    #[arg(long)]
    pub follow: bool,

    /// Seconds between refreshes with --follow
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
}

/// What syscall_latency traces, fixed when it is loaded.
#[derive(Debug, Args, Default)]
#[group(id = LATENCY_GROUP)]
pub struct LatencyOptions {
    /// Only this process (thread group id)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Only tasks with this command name (as `ps -o comm` shows it)
    #[arg(long, value_name = "COMM")]
    pub comm: Option<String>,

    /// Only tasks in this cgroup v2 directory or below it
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Only these syscalls, by name for this arch or by number: read,write,...
    #[arg(long, value_name = "NAMES")]
    pub syscalls: Option<String>,

    /// How to hook; probed when not given: tp-btf then raw-tp for syscalls,
    /// fentry then kprobe for --function
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Option<MethodChoice>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("function_options")
        .args(["pid", "comm", "cgroup", "method", "duration"])
        .multiple(true)
        .requires("function")
))]
pub struct LatencyArgs {
    /// Only this syscall, with its log2 histogram
    #[arg(long, value_name = "NAME", conflicts_with_all = ["function", "syscalls"])]
    pub syscall: Option<String>,

    /// Show each syscall's log2 histogram too
    #[arg(long)]
    pub hist: bool,

    /// Print what happened in each interval until Ctrl-C (JSON Lines with -j)
    #[arg(long, value_name = "SECONDS", conflicts_with = "function")]
    pub interval: Option<f64>,

    /// Measure this kernel function instead (fentry/fexit, else
    /// kprobe/kretprobe) for --duration, then detach
    #[arg(long, value_name = "NAME", conflicts_with = "syscalls")]
    pub function: Option<String>,

    /// Seconds to measure --function for [default: 5]
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    #[command(flatten)]
    pub options: LatencyOptions,

    /// Kernel BTF to resolve CO-RE relocations against, for kernels without /sys/kernel/btf/vmlinux
    #[arg(long, value_name = "FILE", env = "MESHBPF_BTF")]
    pub btf: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep reading until Ctrl-C (JSON Lines with -j); without it, read what the buffer holds and exit
    #[arg(long)]
    pub follow: bool,

    /// Only these event types: exec,open,ptrace,capable,module
    #[arg(long = "type", value_name = "TYPES", value_parser = events::parse_types)]
    pub types: Option<EventTypes>,

    /// Only events of this process (thread group id)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Interface running xdp_mesh_filter or xdp_counter
    #[arg(value_name = "IFACE")]
    pub interface: String,

    /// Write pcapng to FILE, or to stdout with `-w -` (for `| tcpdump -r -`; refused when stdout is a
    /// terminal)
    #[arg(short = 'w', long = "write", value_name = "FILE", required = true)]
    pub write: PathBuf,

    /// Only packets this rule of the active set matched, by id or name (xdp_mesh_filter)
    #[arg(long, value_name = "ID|NAME")]
    pub rule: Option<String>,

    /// Only these verdicts: pass,drop,rate_limited,syn_dropped,banned (drop: a deny rule or the
    /// default policy)
    #[arg(long, value_name = "VERDICTS", value_parser = parse_verdicts)]
    pub verdict: Option<Verdicts>,

    /// Only packets from this CIDR (or address)
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub src: Option<crate::rules::Prefix>,

    /// Only packets to this CIDR (or address)
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub dst: Option<crate::rules::Prefix>,

    /// Only TCP and UDP packets with this source or destination port
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Only packets of this IP protocol: tcp, udp, icmp, icmpv6, a keyword such as gre, or a
    /// number
    #[arg(long, value_name = "PROTO", value_parser = parse_ip_protocol)]
    pub proto: Option<u8>,

    /// Bytes of each packet to keep
    #[arg(long, value_name = "N", default_value_t = capture::MAX_SNAPLEN,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(capture::MAX_SNAPLEN)))]
    pub snaplen: u32,

    /// Stop after N packets
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this long (30s, 5m)
    #[arg(long, value_name = "DURATION", value_parser = parse_capture_duration)]
    pub duration: Option<Duration>,
}

/// The verdicts of `capture --verdict`.
#[derive(Debug, Clone)]
pub struct Verdicts(pub Vec<capture::Verdict>);

fn parse_verdicts(text: &str) -> Result<Verdicts, String> {
    capture::parse_verdicts(text).map(Verdicts)
}

/// An IP protocol by keyword or number, as a rule's `protocol` names it;
/// `any` and `arp` select no IP protocol.
fn parse_ip_protocol(text: &str) -> Result<u8, String> {
    let protocol = crate::rules::protocol(&serde_json::Value::String(text.into()))
        .map_err(|e| format!("{e}; {}", e.hint()))?;
    protocol
        .ip_number()
        .ok_or_else(|| format!("{text} is not one IP protocol; leave --proto out for every packet"))
}

fn parse_capture_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text} is not a duration; write one such as 30s, 5m or 1h"))
}

#[derive(Debug, Subcommand)]
pub enum FilterCommand {
    /// Replace the whole rule set atomically while traffic flows; rules whose ids survive keep
    /// their counters
    Apply(FilterApplyArgs),
    /// What applying a rules file would change, rule by rule, without touching the kernel
    Diff(FilterDiffArgs),
    /// Keep the rule set of `apply --confirm` before its window ends
    Confirm(FilterShowArgs),
    /// Put back the rule set from before `apply --confirm` now, without waiting for the window
    Rollback(FilterShowArgs),
    /// Show the active rules with their ids and hits, the default policy and the limiters
    Show(FilterShowArgs),
    /// Check and compile a rules file without touching the kernel
    Check(FilterCheckArgs),
    /// The per-rule counters
    #[command(subcommand)]
    Counters(FilterCountersCommand),
    /// Swap the filter back to xdp_counter atomically; the interface keeps counting
    Remove(FilterShowArgs),
    /// The ban set: sources dropped before any rule, for a TTL or until deleted
    #[command(
        long_about = "The ban set of the filter on IFACE: packets whose source is in it are dropped before any \
rule sees them. Hosts cost one hash lookup per packet whatever the set holds (up to 1,048,576 per family); \
shorter CIDRs (up to 65,536) go into an LPM trie that is looked up only while it has entries. An entry whose TTL \
ran out never matches again and is deleted by the next add, del or load. Rate limits and SYN-flood protection \
with \"ban\": \"10m\" in the rules file add the sources they refuse.",
        after_help = "Examples:\n  meshbpf filter ban eth0 add 203.0.113.7 198.51.100.0/24 --ttl 10m --reason scanner\n  \
meshbpf filter ban eth0 load feed.txt --ttl 1h\n  meshbpf filter ban eth0 list -j\n  meshbpf filter ban eth0 del 203.0.113.7"
    )]
    Ban(FilterBanArgs),
}

#[derive(Debug, Args)]
pub struct FilterBanArgs {
    /// Interface with xdp_mesh_filter attached
    #[arg(value_name = "IFACE")]
    pub interface: String,

    #[command(subcommand)]
    pub command: FilterBanCommand,
}

#[derive(Debug, Subcommand)]
pub enum FilterBanCommand {
    /// Ban CIDRs or addresses; a CIDR banned already gets the new TTL and reason and keeps its counts
    Add(FilterBanAddArgs),
    /// Lift bans (exactly these CIDRs; a host inside a banned CIDR stays banned)
    Del(FilterBanDelArgs),
    /// The live bans, with what each dropped and when it expires
    List,
    /// Ban every CIDR of a file: one a line, optionally followed by its TTL; # starts a comment.
    /// A file with a bad line is refused whole
    Load(FilterBanLoadArgs),
}

#[derive(Debug, Args)]
pub struct FilterBanAddArgs {
    /// Addresses or CIDRs, IPv4 or IPv6 (203.0.113.7, 198.51.100.0/24, 2001:db8::/32)
    #[arg(value_name = "CIDR", required = true, value_parser = parse_cidr)]
    pub cidrs: Vec<crate::rules::Prefix>,

    #[command(flatten)]
    pub ban: BanOptions,
}

#[derive(Debug, Args)]
pub struct FilterBanDelArgs {
    /// Addresses or CIDRs, as they were added
    #[arg(value_name = "CIDR", required = true, value_parser = parse_cidr)]
    pub cidrs: Vec<crate::rules::Prefix>,
}

#[derive(Debug, Args)]
pub struct FilterBanLoadArgs {
    /// Ban list: "CIDR [TTL]" lines, # comments
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub ban: BanOptions,
}

#[derive(Debug, Args)]
pub struct BanOptions {
    /// How long the bans last (90s, 10m, 12h, 7d; at most 365 days); without it, until deleted.
    /// In `load`, for the lines that give no TTL of their own
    #[arg(long, value_name = "TTL", value_parser = crate::rules::bans::ttl)]
    pub ttl: Option<crate::rules::bans::Ttl>,

    /// Why, shown by `filter ban IFACE list` (at most 63 bytes)
    #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
    pub reason: Option<String>,
}

fn parse_cidr(text: &str) -> Result<crate::rules::Prefix, String> {
    crate::rules::bans::cidr(text).map_err(|e| format!("{e}; {}", e.hint()))
}

fn parse_reason(text: &str) -> Result<String, String> {
    let max = crate::programs::xdp_mesh_filter::bans::MAX_REASON;
    if text.len() > max {
        return Err(format!(
            "the reason is {} bytes; at most {max} are kept, so shorten it",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

#[derive(Debug, Subcommand)]
pub enum FilterCountersCommand {
    /// Zero the packet and byte counts of every rule, or of one
    Reset(FilterCountersResetArgs),
}

#[derive(Debug, Args)]
pub struct FilterCountersResetArgs {
    /// Interface with xdp_mesh_filter attached
    #[arg(value_name = "IFACE")]
    pub interface: String,

    /// Only the rule with this id (`filter show` lists them)
    #[arg(long = "rule", value_name = "ID")]
    pub rule: Option<String>,
}

#[derive(Debug, Args)]
pub struct FilterApplyArgs {
    /// Interface whose filter gets the rules
    #[arg(value_name = "IFACE")]
    pub interface: String,

    /// Rules file (JSON; see the README for the format and the matching semantics)
    #[arg(value_name = "RULES.json")]
    pub rules: PathBuf,

    /// Only say what would change (as `filter diff`); the kernel is not touched
    #[arg(long, conflicts_with = "confirm")]
    pub dry_run: bool,

    /// Put the previous rule set back by itself after this long (e.g. 60s, 5m) unless
    /// `meshbpf filter confirm IFACE` comes first. The kernel keeps the timer: the rollback
    /// happens even if meshbpf, the terminal or the SSH session dies
    #[arg(long, value_name = "WINDOW", value_parser = parse_window)]
    pub confirm: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct FilterDiffArgs {
    /// Interface with xdp_mesh_filter attached
    #[arg(value_name = "IFACE")]
    pub interface: String,

    /// Rules file to compare with the active rule set
    #[arg(value_name = "RULES.json")]
    pub rules: PathBuf,
}

/// A commit-confirm window: a duration such as 60s or 5m, from 1 s to 24 h.
fn parse_window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 60s, 5m or 1h"))?;
    let max = crate::programs::xdp_mesh_filter::confirm::MAX_WINDOW;
    if window < Duration::from_secs(1) || window > max {
        return Err(format!(
            "{text} is outside 1s to {}h: a shorter window leaves no time to confirm, a longer one \
             leaves a forgotten confirmation pending for days",
            max.as_secs() / 3600
        ));
    }
    Ok(window)
}

#[derive(Debug, Args)]
pub struct FilterShowArgs {
    /// Interface with xdp_mesh_filter attached
    #[arg(value_name = "IFACE")]
    pub interface: String,
}

#[derive(Debug, Args)]
pub struct FilterCheckArgs {
    /// Rules file to check
    #[arg(value_name = "RULES.json")]
    pub rules: PathBuf,

    /// Also say how the set compiled: memory, how each field is looked up, and the most lookups a
    /// packet costs (JSON always has them)
    #[arg(long)]
    pub stats: bool,
}

#[derive(Debug, Subcommand)]
pub enum LsmCommand {
    /// Check a policy without attaching: what it watches and denies, its allow-lists, and whether it
    /// would lock the operator out
    Check(LsmCheckArgs),
    /// Replace the policy of the attached lsm_monitor atomically; the mode stays unless a flag
    /// changes it
    Apply(LsmApplyArgs),
}

#[derive(Debug, Args)]
pub struct LsmCheckArgs {
    /// Policy file (JSON; see the README, "LSM policy file")
    #[arg(value_name = "POLICY.json")]
    pub policy: PathBuf,

    /// Check it for enforce mode: refuse it, as `attach --lsm --enforce` would, when it denies the
    /// operator what it takes to undo it
    #[arg(long)]
    pub enforce: bool,

    /// Also show whether reading, writing and executing PATH would be reported or denied (repeatable)
    #[arg(long, value_name = "PATH")]
    pub path: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Compiled BPF object (clang -g -O2 -target bpf -c prog.bpf.c -o prog.bpf.o)
    #[arg(value_name = "FILE.bpf.o")]
    pub file: PathBuf,

    /// Name to pin it under (loaded/NAME); default: the file name without .bpf.o
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Also pin every map, at loaded/NAME/map_<map>, for other tools (bpftool map dump pinned ...)
    #[arg(long)]
    pub pin_maps: bool,

    /// Set a global variable (const volatile in .rodata, or .data/.bss) before load; repeatable
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = globals::parse_assignment)]
    pub set: Vec<Assignment>,

    /// Write libbpf's output, with the whole verifier log on a rejection, to FILE
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Kernel BTF to resolve CO-RE relocations against, for kernels without /sys/kernel/btf/vmlinux
    #[arg(long, value_name = "FILE", env = "MESHBPF_BTF")]
    pub btf: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UnloadArgs {
    /// Name of the loaded object (see `meshbpf list`)
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// A usage error for a command line that chose no target.
fn no_target(choices: &str) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::MissingRequiredArgument,
        format!("no target was chosen: give {choices}\n"),
    )
}

/// `detach`, as typed.
#[derive(Debug)]
pub enum DetachTarget {
    /// `detach IFACE`.
    Interface(String),
    /// `detach --latency`.
    Latency,
    /// `detach --lsm`.
    Lsm,
}

/// The command line of `detach`: one target, and no flags of its own.
#[derive(Debug, Args)]
#[group(skip)]
struct DetachFlags {
    /// Interface to detach from; works even after the interface was deleted
    #[arg(value_name = "IFACE", required_unless_present_any = ["latency", "lsm"])]
    interface: Option<String>,

    /// Detach the host-wide syscall_latency instead
    #[arg(long, conflicts_with = "interface")]
    latency: bool,

    /// Detach the host-wide lsm_monitor instead; works in any mode
    #[arg(long, conflicts_with_all = ["interface", "latency"])]
    lsm: bool,
}

impl FromArgMatches for DetachTarget {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = DetachFlags::from_arg_matches(matches)?;
        Ok(match flags.interface {
            _ if flags.lsm => DetachTarget::Lsm,
            _ if flags.latency => DetachTarget::Latency,
            Some(interface) => DetachTarget::Interface(interface),
            None => return Err(no_target("IFACE, --latency or --lsm")),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for DetachTarget {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        DetachFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        DetachFlags::augment_args_for_update(cmd)
    }
}

#[derive(Debug, Args)]
pub struct LsmApplyArgs {
    /// Policy file (JSON; see the README for the format)
    #[arg(value_name = "POLICY.json")]
    pub policy: PathBuf,

    /// Deny what the policy denies from now on (BPF LSM only)
    #[arg(long, conflicts_with = "audit")]
    pub enforce: bool,

    /// Only report what the policy would deny from now on
    #[arg(long)]
    pub audit: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this interface (an object in JSON); all attachments (an array) when omitted
    #[arg(value_name = "IFACE")]
    pub interface: Option<String>,

    /// Count program runs and run time over a window of this many seconds, with the kernel's
    /// run-time statistics enabled for this command only (kernel.bpf_stats_enabled is left alone)
    #[arg(long, value_name = "SECONDS", value_parser = sample_window)]
    pub sample: Option<Duration>,

    /// Write everything once in the Prometheus text format (as `serve` does on /metrics), for
    /// node_exporter's textfile collector
    #[arg(long, conflicts_with_all = ["interface", "sample"])]
    pub prometheus: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on; loopback unless told otherwise
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9435")]
    pub listen: std::net::SocketAddr,
    /// Filter rules with series of their own, per interface; the others are
    /// summed into rule="other" (the most hit rules keep theirs)
    #[arg(long, value_name = "N", default_value_t = crate::metrics::DEFAULT_MAX_SERIES,
          value_parser = series_budget)]
    pub max_series: usize,
}

/// At least one rule series: with none, every hit would be "other".
fn series_budget(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("0 would fold every rule into rule=\"other\": give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{text}' is not a number of rules")),
    }
}

/// 0.01 s to an hour: a window long enough to see runs, short enough to wait for.
fn sample_window(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&seconds) {
        return Err(format!("{seconds} is not between 0.01 and 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Exit 1 when any check fails, for CI gates
    #[arg(long)]
    pub strict: bool,

    /// Mount bpffs and tracefs where missing and remove meshbpf's orphaned pins; says what it did
    #[arg(long)]
    pub fix: bool,

    /// Warn when a filter has dropped more than this share of the packets it judged
    #[arg(long, value_name = "PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_drop_percent: u8,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshbpf").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn attach_takes_an_interface_and_an_optional_mode() {
        let cli = parse(&["attach", "eth0", "--mode", "skb", "-j"]).unwrap();
        assert!(cli.global.json);
        match cli.command {
            Command::Attach(AttachTarget::Interface(a)) => {
                assert_eq!(a.interface, "eth0");
                assert_eq!(a.mode, Some(XdpMode::Skb));
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["attach", "eth0"]).unwrap().command {
            Command::Attach(AttachTarget::Interface(a)) => {
                assert_eq!(a.mode, None);
                assert_eq!(a.options.max_flows, 65536);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&["stats", "-p", "--bpffs", "/sys/fs/bpf/other"]).unwrap();
        assert!(cli.global.pretty);
        assert_eq!(cli.global.bpffs, PathBuf::from("/sys/fs/bpf/other"));
        match cli.command {
            Command::Stats(s) => assert_eq!(s.interface, None),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn sample_windows_are_seconds_within_reason() {
        match parse(&["stats", "--sample", "2.5"]).unwrap().command {
            Command::Stats(s) => assert_eq!(s.sample, Some(Duration::from_millis(2500))),
            other => panic!("parsed as {other:?}"),
        }
        for bad in ["0", "0.001", "3601", "two"] {
            assert_eq!(
                parse(&["stats", "--sample", bad]).unwrap_err().kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}"
            );
        }
    }

    #[test]
    fn health_takes_strict_fix_and_a_drop_threshold() {
        match parse(&["health", "--strict", "--fix"]).unwrap().command {
            Command::Health(h) => {
                assert!(h.strict && h.fix);
                assert_eq!(h.max_drop_percent, 50);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["health", "--max-drop-percent", "101"]).is_err());
    }

    #[test]
    fn load_takes_repeated_sets_and_attach_takes_an_object_without_an_interface() {
        match parse(&[
            "load",
            "x.bpf.o",
            "--set",
            "a=1",
            "--set",
            "b=0x2",
            "--pin-maps",
        ])
        .unwrap()
        .command
        {
            Command::Load(l) => {
                assert_eq!(l.set.len(), 2);
                assert_eq!(l.set[1].value, "0x2");
                assert!(l.pin_maps);
                assert_eq!(l.name, None);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["attach", "--object", "o", "--prog", "p"])
            .unwrap()
            .command
        {
            Command::Attach(AttachTarget::Object(a)) => {
                assert_eq!(a.target, None);
                assert_eq!(a.object, "o");
                assert_eq!(a.prog.as_deref(), Some("p"));
            }
            other => panic!("parsed as {other:?}"),
        }
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["load", "x.o", "--set", "novalue"])
                .unwrap_err()
                .kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["attach", "eth0", "--prog", "p"])
                .unwrap_err()
                .kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["attach", "eth0", "--object", "o", "--no-flows"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn usage_errors_are_reported_as_such() {
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["attach"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["attach", "eth0", "--mode", "hw"])
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            parse(&["frobnicate"]).unwrap_err().kind(),
            ErrorKind::InvalidSubcommand
        );
        assert_eq!(
            parse(&["completions", "tcsh"]).unwrap_err().kind(),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn lsm_takes_a_policy_and_enforce_needs_one() {
        use clap::error::ErrorKind;
        match parse(&["attach", "--lsm", "--policy", "p.json", "--enforce"])
            .unwrap()
            .command
        {
            Command::Attach(AttachTarget::Lsm(a)) => {
                assert!(a.enforce);
                assert_eq!(a.policy, Some(PathBuf::from("p.json")));
            }
            other => panic!("parsed as {other:?}"),
        }
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["attach", "--lsm", "--enforce"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["attach", "--policy", "p.json"]),
            ErrorKind::MissingRequiredArgument
        );
        for conflicting in [
            &["attach", "eth0", "--lsm"][..],
            &["attach", "--lsm", "--latency"],
            &["attach", "--lsm", "--mode", "skb"],
            &["attach", "--lsm", "--pid", "1"],
            &["attach", "--lsm", "--object", "o"],
            &["detach", "eth0", "--lsm"],
            &["detach", "--lsm", "--latency"],
            &["lsm", "apply", "p.json", "--enforce", "--audit"],
        ] {
            assert_eq!(
                kind(conflicting),
                ErrorKind::ArgumentConflict,
                "{conflicting:?}"
            );
        }
        assert!(matches!(
            parse(&["detach", "--lsm"]).unwrap().command,
            Command::Detach(DetachTarget::Lsm)
        ));
        match parse(&["lsm", "apply", "p.json", "--audit"])
            .unwrap()
            .command
        {
            Command::Lsm(LsmCommand::Apply(a)) => {
                assert!(a.audit && !a.enforce);
                assert_eq!(a.policy, PathBuf::from("p.json"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn latency_options_go_with_latency_only() {
        use clap::error::ErrorKind;
        match parse(&["attach", "--latency", "--pid", "7", "--syscalls", "read"])
            .unwrap()
            .command
        {
            Command::Attach(AttachTarget::Latency(a)) => {
                assert_eq!(a.options.pid, Some(7));
                assert_eq!(a.options.syscalls.as_deref(), Some("read"));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            parse(&["detach", "--latency"]).unwrap().command,
            Command::Detach(DetachTarget::Latency)
        ));
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["attach", "eth0", "--pid", "7"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["attach", "--pid", "7"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["attach", "eth0", "--latency"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["attach", "--latency", "--mode", "skb"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["detach"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["latency", "--pid", "7"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["latency", "--duration", "1"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["latency", "--function", "vfs_read", "--interval", "1"]),
            ErrorKind::ArgumentConflict
        );
        assert!(parse(&[
            "latency",
            "--function",
            "vfs_read",
            "--method",
            "kprobe",
            "--pid",
            "1"
        ])
        .is_ok());
        assert!(parse(&["latency", "--syscall", "read", "--interval", "0.5"]).is_ok());
    }

    #[test]
    fn each_target_takes_its_own_flags_only() {
        use clap::error::ErrorKind;
        match parse(&["attach", "eth0", "--object", "o", "--mode", "skb"])
            .unwrap()
            .command
        {
            Command::Attach(AttachTarget::Object(a)) => {
                assert_eq!(a.target.as_deref(), Some("eth0"));
                assert_eq!(a.mode, Some(XdpMode::Skb));
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["attach", "--lsm", "--btf", "b"]).unwrap().command {
            Command::Attach(AttachTarget::Lsm(a)) => assert_eq!(a.btf, Some(PathBuf::from("b"))),
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["detach", "eth0"]).unwrap().command {
            Command::Detach(DetachTarget::Interface(name)) => assert_eq!(name, "eth0"),
            other => panic!("parsed as {other:?}"),
        }
        for foreign in [
            &["attach", "--latency", "--max-flows", "5"][..],
            &["attach", "--latency", "--filter", "f.json"],
            &["attach", "--latency", "--policy", "p.json"],
            &["attach", "--latency", "--object", "o"],
            &["attach", "eth0", "--policy", "p.json"],
            &["attach", "eth0", "--enforce"],
            &["attach", "--lsm", "--filter", "f.json"],
            &["attach", "--lsm", "--tc-method", "tcx"],
            &["attach", "--object", "o", "--filter", "f.json"],
            &["attach", "--object", "o", "--max-flows", "5"],
            &["attach", "--object", "o", "--btf", "b"],
            &["attach", "--object", "o", "--policy", "p.json"],
            &["attach", "--object", "o", "--comm", "c"],
            &["detach", "--latency", "eth0"],
        ] {
            assert_eq!(
                parse(foreign).unwrap_err().kind(),
                ErrorKind::ArgumentConflict,
                "{foreign:?}"
            );
        }
    }
}
