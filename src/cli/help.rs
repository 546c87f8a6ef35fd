//! Long help (`brim help CMD` / `brim CMD --help`): what each command is for, with examples,
//! man-page style. Short help (`-h`) stays one line per flag.

pub(crate) const LONG_ABOUT: &str = "\
brim: fill machines to the brim.

A two-level cluster resource manager: a master shares the cluster's resources among
frameworks (weighted DRF), frameworks decide what runs where, agents run tasks in cgroups.
One binary is the master, the agent, a local dev cluster and the operator CLI.";

pub(crate) const OVERVIEW: &str = "\
Getting started:
  brim dev                         master + agent on this machine (UI at https://127.0.0.1:5050/)
  brim run -- echo hello           run a command on the cluster, stream its output
  brim tasks                       list tasks; also: brim agents, brim frameworks
  brim top                         live usage in the terminal

Environment:
  BRIM_MASTER   master address (host:port) for client commands; default 127.0.0.1:5050
  BRIM_TLS_CA, BRIM_TLS_CERT, BRIM_TLS_KEY, BRIM_TOKEN, BRIM_INSECURE
                the --tls-ca, --tls-cert, --tls-key, --token and --insecure flags
  RUST_LOG      log filter, e.g. RUST_LOG=debug or RUST_LOG=brim_master=debug

Security: everything speaks TLS; `brim dev` makes a throwaway CA in ~/.brim/dev/tls that
client commands find by themselves. See docs/SECURITY.md.

Shell completions: brim completions --help";

pub(crate) const DEV: &str = "\
Starts a master and one agent in this process with an embedded registry under
~/.brim/dev. The web UI is at https://127.0.0.1:5050/. Needs root for cgroups.
Both serve TLS with certificates from a throwaway CA in <work dir>/tls (made on the first
start), where client commands find it; the agent registers with its certificate and
client commands present the `operator` one.

Examples:
  brim dev
  brim dev --resources 'cpus:4;mem:8192' --port 6050 --agent-port 6051";

pub(crate) const MASTER: &str = "\
Runs a master: gRPC for frameworks and agents, HTTP for operators (/state, /metrics, the
web UI at /) on one port.

TLS is required: --tls-cert/--tls-key (served; also shown to agents for sandboxes) and
--tls-ca (the cluster CA: only agents with a certificate it signed may register), or
--insecure for plaintext. --credentials maps bearer tokens to principals (then every call
needs a token or a client certificate); --acls says what each principal may do (then
anything not granted is denied). Both files are re-read when they change.

Examples:
  brim certs /etc/brim/pki master --host m1.example
  brim master --ip 0.0.0.0 --work-dir /var/lib/brim/master \\
    --tls-cert /etc/brim/pki/master.pem --tls-key /etc/brim/pki/master-key.pem \\
    --tls-ca /etc/brim/pki/ca.pem --credentials /etc/brim/credentials.toml --acls /etc/brim/acls.toml";

pub(crate) const AGENT: &str = "\
Runs an agent: registers with the master, runs tasks in cgroups, serves task output on
its HTTP port (/sandbox). Needs root.

TLS is required (--tls-cert/--tls-key/--tls-ca from the cluster CA), or --insecure.

Examples:
  brim agent --master 10.0.0.1:5050 --tls-cert a1.pem --tls-key a1-key.pem --tls-ca ca.pem
  brim agent --master 10.0.0.1:5050 --resources 'cpus:8;mem:16384' --attributes 'rack:r1'
  brim agent --master 10.0.0.1:5050 --oversubscribe     lend allocated-but-unused cpus/mem
                                                         to revocable work";

pub(crate) const CERTS: &str = "\
Creates a cluster CA in DIR (ca.pem, ca-key.pem) unless one is there, then issues one
certificate per NAME (NAME.pem, NAME-key.pem), valid as server and client. The NAME is the
certificate's common name: the principal it authenticates as. Keep ca-key.pem offline.

Examples:
  brim certs /etc/brim/pki master agent-r1-01 --host m1.example --host 10.0.0.1
  brim certs ~/brim-pki alice";

pub(crate) const RUN: &str = "\
Runs a command as one task, or as a job array of N instances (each gets BRIM_INSTANCE and
BRIM_INSTANCES), streams their output and exits with the first non-zero exit code (0 when
all succeed; 2 when nothing could be placed; 130 after Ctrl-C). With --instances > 1 on a
terminal a progress bar shows placed, running and finished instances on stderr.

Examples:
  brim run -- echo hello
  brim run --cpus 2 --mem 512 -- ./train.sh --epochs 3
  brim run --instances 10 -- 'echo shard $BRIM_INSTANCE of $BRIM_INSTANCES'
  brim run --revocable --instances 4 -- ./crunch.sh     on slack; preempted instances retry";

pub(crate) const TASKS: &str = "\
Examples:
  brim tasks            live tasks
  brim tasks --all      with finished ones
  brim tasks --json | jq '.[].state'";

pub(crate) const TASK_EXEC: &str = "\
Examples:
  brim task exec web-1 -- 'ss -ltn; cat /etc/os-release'   one argument: run by /bin/sh -c
  brim task exec web-1 -- ls -l /mnt/mesos/sandbox          several: program and arguments
  brim task exec --detach --id tail web-1 -- tail -f log    a sidecar; prints its id
The command joins the task's namespaces (network, mounts, PIDs; an OCI task's image),
runs as its user in its sandbox, in a cgroup nested under the task's (the task's limits
cap both), and is killed when the task ends. Ctrl-C kills it. The CLI finds the task's
agent through the master and talks to it directly (TLS: with your client certificate).";

pub(crate) const AGENTS: &str = "\
Examples:
  brim agents
  brim agents --slack   allocated, estimated use and revocable slack per agent
  brim agents --json";

pub(crate) const FRAMEWORKS: &str = "\
Examples:
  brim frameworks --all";

pub(crate) const TOP: &str = "\
A live view of the master's /state: tasks with measured cpu (% of one core, from the
cumulative cpu counter) and memory, agents with allocated vs used resources and slack
(allocated but unused cpus) and the revocable slack agents with --oversubscribe lend.

Keys:
  c m n s a l   sort by cpu, mem, name, state, agent, slack (same key again: reverse)
  r             reverse the order
  tab           sort the agents table instead of the tasks table
  t             show ended tasks too
  space         refresh now
  q, Esc, ^C    quit

Examples:
  brim top
  brim top --interval 5 --sort mem
  BRIM_MASTER=10.0.0.1:5050 brim top";
