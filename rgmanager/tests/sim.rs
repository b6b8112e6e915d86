//! The service state machine of every node inside a simulated cluster:
//! cmand's agreed-order group (per partition), views with quorum, fencing
//! that kills the victim's processes and resources, agents that take time
//! and fail (start, stop, status), node crashes, partitions, restarts and
//! administrator relocations, all from one seed.
//!
//! Checked after every event: a service's resources are never up on two
//! nodes at once (a crashed node's stay up until it is fenced, so this is
//! also "never on a survivor before the dead owner is fenced"), never on a
//! node outside its restricted domain. Checked at the end, once faults
//! stop and failed or disabled services are re-enabled: every member
//! holds the same records, and every service runs, on its recorded owner
//! only.
//!
//! `RG_SIM_SEEDS=N` runs N seeds (default 12); `RG_SIM_SEED=S` one seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use rgmanager::config::{parse, RmConfig};
use rgmanager::core::{Action, AdminOp, Input, Msg, Node, Op, Pos};
use rgmanager::state::State;
use rgmanager::NodeId;

use cman::sim::Rng;

/// A draw in `0..n` (0 when n is 0) from cman's seeded generator.
fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.range(0, n.max(1) - 1)
}

/// True `p` times in a hundred.
fn percent(rng: &mut Rng, p: u64) -> bool {
    below(rng, 100) < p
}

fn config(n: u32) -> RmConfig {
    let nodes: String = (1..=n)
        .map(|i| format!("<clusternode name=\"n{i}\" nodeid=\"{i}\"/>"))
        .collect();
    let text = format!(
        r#"<cluster name="sim" config_version="1"><clusternodes>{nodes}</clusternodes><rm>
<failoverdomains>
  <failoverdomain name="front" ordered="1" restricted="1"><failoverdomainnode name="n1" priority="1"/><failoverdomainnode name="n2" priority="2"/></failoverdomain>
  <failoverdomain name="back" ordered="0" restricted="1"><failoverdomainnode name="n2"/><failoverdomainnode name="n3"/></failoverdomain>
  <failoverdomain name="loose" ordered="1" restricted="0" nofailback="1"><failoverdomainnode name="n3" priority="1"/></failoverdomain>
</failoverdomains>
<service name="web" domain="front" recovery="relocate"><ip address="10.0.0.1"/><script name="web" file="/x"/></service>
<service name="db" domain="back" recovery="restart" max_restarts="2" restart_expire_time="60"><fs name="db" mountpoint="/db"/></service>
<service name="mail" domain="loose"><script name="mail" file="/y"/></service>
<service name="batch" recovery="restart"><script name="batch" file="/z"/></service>
<service name="cold" autostart="0" recovery="disable"><script name="cold" file="/w"/></service>
</rm></cluster>"#
    );
    parse(&text).unwrap()
}

#[derive(Debug)]
enum Ev {
    Pump(u32),
    OpDone {
        node: u32,
        inc: u32,
        svc: String,
        op: Op,
    },
    Tick(u32, u32),
    Local(u32, u32, Input),
    Fault,
    Fence(u32),
}

/// One node's view of every service: (name, state, owner).
type Records = Vec<(String, State, Option<NodeId>)>;

struct SimNode {
    core: Option<Node>,
    inc: u32,
    /// Partition id (meaningful while the node's cmand is up).
    comp: u32,
    /// The group members this node saw last.
    view: BTreeSet<u32>,
    /// Resources up here (stay up after a crash until fenced).
    physical: BTreeSet<String>,
    /// Services whose next status check fails.
    broken: BTreeSet<String>,
    /// cmand down (crashed or fenced).
    down: bool,
    fenced: bool,
}

struct Sim {
    rng: Rng,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, usize)>>,
    payload: Vec<Option<Ev>>,
    nodes: BTreeMap<u32, SimNode>,
    queues: BTreeMap<u32, VecDeque<Msg>>,
    next_comp: u32,
    view_seq: u64,
    victims: BTreeSet<u32>,
    cfg: RmConfig,
    ids: BTreeMap<String, NodeId>,
    faults_on: bool,
    fail_pct: u64,
    n: u32,
    admin_id: u64,
    trace: Vec<String>,
}

impl Sim {
    fn new(seed: u64, n: u32) -> Sim {
        let cfg = config(n);
        let ids = (1..=n).map(|i| (format!("n{i}"), NodeId(i))).collect();
        let mut sim = Sim {
            rng: Rng::new(seed),
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            payload: Vec::new(),
            nodes: BTreeMap::new(),
            queues: BTreeMap::new(),
            next_comp: 1,
            view_seq: 0,
            victims: BTreeSet::new(),
            cfg,
            ids,
            faults_on: true,
            fail_pct: 4,
            n,
            admin_id: 0,
            trace: Vec::new(),
        };
        for i in 1..=n {
            sim.nodes.insert(
                i,
                SimNode {
                    core: None,
                    inc: 0,
                    comp: 0,
                    view: BTreeSet::new(),
                    physical: BTreeSet::new(),
                    broken: BTreeSet::new(),
                    down: true,
                    fenced: true,
                },
            );
        }
        // Nodes come up one by one.
        for i in 1..=n {
            let at = below(&mut sim.rng, 3000);
            sim.at(at, Ev::Local(i, u32::MAX, Input::Tick { now_ms: 0 }));
        }
        sim.at(5000, Ev::Fault);
        sim
    }

    fn at(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.payload.push(Some(ev));
        self.events.push(Reverse((
            self.now + delay,
            self.seq,
            self.payload.len() - 1,
        )));
    }

    fn log(&mut self, s: String) {
        self.trace.push(format!("{:>8} {s}", self.now));
        if self.trace.len() > 400 {
            self.trace.remove(0);
        }
    }

    fn alive(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.down)
            .map(|(i, _)| *i)
            .collect()
    }

    fn comp_members(&self, comp: u32) -> BTreeSet<u32> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.down && n.comp == comp)
            .map(|(i, _)| *i)
            .collect()
    }

    fn quorate(&self, comp: u32) -> bool {
        self.comp_members(comp).len() as u32 * 2 > self.n
    }

    fn main_comp(&self) -> Option<u32> {
        let comps: BTreeSet<u32> = self.alive().iter().map(|i| self.nodes[i].comp).collect();
        comps.into_iter().find(|c| self.quorate(*c))
    }

    /// New views for every partition whose membership changed.
    fn views(&mut self) {
        let comps: BTreeSet<u32> = self.alive().iter().map(|i| self.nodes[i].comp).collect();
        for c in comps {
            let members = self.comp_members(c);
            let prior = members
                .iter()
                .find(|m| !self.nodes[m].view.is_empty())
                .map(|m| self.nodes[m].view.clone())
                .unwrap_or_default();
            if prior == members {
                continue;
            }
            let joined: Vec<u32> = members.difference(&prior).copied().collect();
            let failed: Vec<u32> = prior.difference(&members).copied().collect();
            let quorate = self.quorate(c);
            if quorate {
                for f in &failed {
                    if self.victims.insert(*f) {
                        let d = 300 + below(&mut self.rng, 2000);
                        self.at(d, Ev::Fence(*f));
                    }
                }
            }
            self.view_seq += 1;
            let pos = Pos {
                view: self.view_seq,
                seq: 0,
            };
            let unfenced: Vec<NodeId> = self.victims.iter().map(|v| NodeId(*v)).collect();
            self.log(format!(
                "view {c}: {members:?} joined {joined:?} failed {failed:?} q={quorate}"
            ));
            let q = self.queues.remove(&c).unwrap_or_default();
            let kept: VecDeque<Msg> = q;
            let pumps = kept.len();
            self.queues.insert(c, kept);
            for _ in 0..pumps {
                let d = 1 + below(&mut self.rng, 20);
                self.at(d, Ev::Pump(c));
            }
            for m in members.clone() {
                self.nodes.get_mut(&m).unwrap().view = members.clone();
                self.input(m, Input::Quorum(quorate));
                self.input(
                    m,
                    Input::Confchg {
                        pos,
                        members: members.iter().map(|i| NodeId(*i)).collect(),
                        joined: joined.iter().map(|i| NodeId(*i)).collect(),
                        failed: failed.iter().map(|i| NodeId(*i)).collect(),
                        unfenced: unfenced.clone(),
                    },
                );
            }
        }
    }

    fn input(&mut self, node: u32, input: Input) {
        let Some(core) = self.nodes.get_mut(&node).and_then(|n| n.core.as_mut()) else {
            return;
        };
        let actions = core.step(input);
        for l in core.take_log() {
            self.trace.push(format!("{:>8} n{node}: {l}", self.now));
        }
        for a in actions {
            self.act(node, a);
        }
    }

    fn act(&mut self, node: u32, a: Action) {
        match a {
            Action::Send(msg) => {
                let comp = self.nodes[&node].comp;
                self.queues.entry(comp).or_default().push_back(msg);
                let d = 1 + below(&mut self.rng, 30);
                self.at(d, Ev::Pump(comp));
            }
            Action::Run { svc, op } => {
                let inc = self.nodes[&node].inc;
                if op == Op::Start {
                    self.nodes
                        .get_mut(&node)
                        .unwrap()
                        .physical
                        .insert(svc.clone());
                }
                self.log(format!("n{node} run {op:?} {svc}"));
                let d = 20 + below(&mut self.rng, 700);
                self.at(d, Ev::OpDone { node, inc, svc, op });
            }
            Action::Reply { .. } => {}
        }
    }

    fn op_done(&mut self, node: u32, svc: String, op: Op) {
        let fail = self.fail_pct;
        let f1 = percent(&mut self.rng, fail * 2);
        let f2 = percent(&mut self.rng, fail / 2);
        let n = self.nodes.get_mut(&node).unwrap();
        let (ok, stop_ok) = match op {
            Op::Start => {
                if f1 {
                    if !f2 {
                        n.physical.remove(&svc);
                    }
                    (false, !f2)
                } else {
                    (true, true)
                }
            }
            Op::Stop | Op::Cleanup => {
                if f2 {
                    (false, false)
                } else {
                    n.physical.remove(&svc);
                    n.broken.remove(&svc);
                    (true, true)
                }
            }
            Op::Status => (!n.broken.contains(&svc) && !f2, true),
        };
        self.log(format!(
            "n{node} done {op:?} {svc} ok={ok} stop_ok={stop_ok}"
        ));
        self.input(
            node,
            Input::OpDone {
                svc,
                op,
                ok,
                stop_ok,
            },
        );
    }

    fn start_node(&mut self, i: u32) {
        let main = self.main_comp();
        let comp = main.unwrap_or_else(|| {
            // No quorate partition: join the first live one (or a new one).
            self.alive()
                .first()
                .map(|a| self.nodes[a].comp)
                .unwrap_or(0)
        });
        let mut core = Node::new(NodeId(i), &self.cfg, &self.ids);
        core.set_status_interval_ms(2000);
        let n = self.nodes.get_mut(&i).unwrap();
        n.inc += 1;
        n.down = false;
        n.fenced = false;
        n.comp = comp;
        n.view.clear();
        n.broken.clear();
        n.core = Some(core);
        let inc = n.inc;
        self.log(format!("n{i} starts (inc {inc})"));
        self.at(1000, Ev::Tick(i, inc));
        self.views();
    }

    fn crash(&mut self, i: u32) {
        let n = self.nodes.get_mut(&i).unwrap();
        n.core = None;
        n.down = true;
        n.inc += 1;
        self.log(format!("n{i} crashes"));
        self.views();
    }

    fn fence(&mut self, v: u32) {
        if !self.victims.contains(&v) {
            return;
        }
        let Some(main) = self.main_comp() else {
            let d = 500 + below(&mut self.rng, 1000);
            return self.at(d, Ev::Fence(v));
        };
        self.victims.remove(&v);
        let n = self.nodes.get_mut(&v).unwrap();
        n.core = None;
        n.down = true;
        n.fenced = true;
        n.inc += 1;
        n.physical.clear();
        self.log(format!("n{v} fenced"));
        self.views();
        for m in self.comp_members(main) {
            let inc = self.nodes[&m].inc;
            let d = below(&mut self.rng, 300);
            self.at(d, Ev::Local(m, inc, Input::FenceNotice(NodeId(v))));
        }
    }

    /// Nodes that are faulty: down or outside the main partition.
    fn faulty(&self) -> usize {
        let main = self.main_comp();
        self.nodes
            .values()
            .filter(|n| n.down || Some(n.comp) != main)
            .count()
    }

    fn fault(&mut self) {
        let budget = ((self.n - 1) / 2) as usize;
        let alive = self.alive();
        let roll = below(&mut self.rng, 100);
        let main = self.main_comp();
        if roll < 15 && self.faulty() < budget && !alive.is_empty() {
            let v = alive[below(&mut self.rng, alive.len() as u64) as usize];
            self.crash(v);
        } else if roll < 25 && self.faulty() < budget {
            let inmain: Vec<u32> = alive
                .iter()
                .copied()
                .filter(|a| Some(self.nodes[a].comp) == main)
                .collect();
            if inmain.len() > 1 {
                let v = inmain[below(&mut self.rng, inmain.len() as u64) as usize];
                let c = self.next_comp;
                self.next_comp += 1;
                self.nodes.get_mut(&v).unwrap().comp = c;
                self.log(format!("n{v} partitioned away"));
                self.views();
            }
        } else if roll < 45 {
            let dead: Vec<u32> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.down && n.fenced)
                .map(|(i, _)| *i)
                .collect();
            if !dead.is_empty() {
                let v = dead[below(&mut self.rng, dead.len() as u64) as usize];
                self.start_node(v);
            }
        } else if roll < 65 {
            // A resource breaks: the owner's next status check fails.
            let running: Vec<(u32, String)> = self
                .nodes
                .iter()
                .filter(|(_, n)| !n.down)
                .flat_map(|(i, n)| n.physical.iter().map(move |s| (*i, s.clone())))
                .collect();
            if !running.is_empty() {
                let (i, s) = running[below(&mut self.rng, running.len() as u64) as usize].clone();
                self.log(format!("n{i}: {s} breaks"));
                self.nodes.get_mut(&i).unwrap().broken.insert(s);
            }
        } else if !alive.is_empty() {
            let from = alive[below(&mut self.rng, alive.len() as u64) as usize];
            let svcs: Vec<String> = self.cfg.services.iter().map(|s| s.name.clone()).collect();
            let svc = svcs[below(&mut self.rng, svcs.len() as u64) as usize].clone();
            let to = 1 + below(&mut self.rng, self.n as u64) as u32;
            let op = match below(&mut self.rng, 5) {
                0 => AdminOp::Relocate(Some(NodeId(to))),
                1 => AdminOp::Relocate(None),
                2 => AdminOp::Disable,
                3 => AdminOp::Enable(Some(NodeId(to))),
                _ => AdminOp::Enable(None),
            };
            self.admin(from, svc, op);
        }
    }

    fn admin(&mut self, from: u32, svc: String, op: AdminOp) {
        self.admin_id += 1;
        let id = self.admin_id;
        self.log(format!("admin on n{from}: {op:?} {svc}"));
        self.input(from, Input::Admin { id, svc, op });
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((t, _, idx))) = self.events.pop() else {
            return false;
        };
        self.now = t;
        let ev = self.payload[idx].take().unwrap();
        match ev {
            Ev::Pump(c) => {
                let Some(msg) = self.queues.get_mut(&c).and_then(|q| q.pop_front()) else {
                    return true;
                };
                for m in self.comp_members(c) {
                    self.input(m, Input::Deliver(msg.clone()));
                }
            }
            Ev::OpDone { node, inc, svc, op } => {
                if self.nodes[&node].inc == inc && !self.nodes[&node].down {
                    self.op_done(node, svc, op);
                }
            }
            Ev::Tick(node, inc) => {
                if self.nodes[&node].inc == inc && !self.nodes[&node].down {
                    let now_ms = self.now;
                    self.input(node, Input::Tick { now_ms });
                    self.at(1000, Ev::Tick(node, inc));
                }
            }
            Ev::Local(node, inc, input) => {
                if inc == u32::MAX {
                    self.start_node(node);
                } else if self.nodes[&node].inc == inc {
                    self.input(node, input);
                }
            }
            Ev::Fault => {
                if self.faults_on {
                    self.fault();
                    let d = 500 + below(&mut self.rng, 4000);
                    self.at(d, Ev::Fault);
                }
            }
            Ev::Fence(v) => self.fence(v),
        }
        self.check_safety();
        true
    }

    fn check_safety(&self) {
        for s in &self.cfg.services {
            let on: Vec<u32> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.physical.contains(&s.name))
                .map(|(i, _)| *i)
                .collect();
            assert!(on.len() <= 1, "{} up on nodes {on:?}", s.name);
            if let Some(d) = s.domain.as_ref().map(|d| &self.cfg.domains[d]) {
                if d.restricted {
                    for i in &on {
                        assert!(
                            d.nodes.iter().any(|(n, _)| *n == format!("n{i}")),
                            "{} up on n{i}, outside its restricted domain {}",
                            s.name,
                            d.name
                        );
                    }
                }
            }
        }
    }

    fn run_until(&mut self, t: u64) {
        while self
            .events
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= t)
        {
            self.step();
        }
        self.now = self.now.max(t);
    }

    fn records(&self) -> Vec<(u32, Records)> {
        self.nodes
            .iter()
            .filter_map(|(i, n)| {
                let c = n.core.as_ref()?;
                c.is_synced().then(|| {
                    (
                        *i,
                        c.replicated()
                            .services
                            .iter()
                            .map(|(s, r)| (s.clone(), r.state, r.owner))
                            .collect(),
                    )
                })
            })
            .collect()
    }

    /// Faults stop, dead nodes come back, failed/disabled/stopped
    /// services are re-enabled; then everything must run.
    fn settle_and_check(&mut self) {
        self.faults_on = false;
        self.fail_pct = 0;
        let t = self.now + 10_000;
        self.run_until(t);
        for i in 1..=self.n {
            if self.nodes[&i].down {
                self.start_node(i);
            }
        }
        let t = self.now + 15_000;
        self.run_until(t);
        for round in 0..3 {
            let recs = self.records();
            let Some((first, svcs)) = recs.first().cloned() else {
                panic!("no node holds records");
            };
            for (svc, st, _) in svcs {
                match st {
                    State::Failed => self.admin(first, svc, AdminOp::Disable),
                    State::Disabled | State::Stopped => {
                        self.admin(first, svc, AdminOp::Enable(None))
                    }
                    _ => {}
                }
            }
            let t = self.now + 15_000;
            self.run_until(t);
            let _ = round;
        }
        let recs = self.records();
        assert_eq!(recs.len(), self.n as usize, "every node holds the records");
        for (i, r) in &recs[1..] {
            assert_eq!(r, &recs[0].1, "n{i} disagrees with n{}", recs[0].0);
        }
        for (svc, st, owner) in &recs[0].1 {
            assert_eq!(*st, State::Started, "{svc} is {st:?}");
            let owner = owner.unwrap();
            for (i, n) in &self.nodes {
                assert_eq!(
                    n.physical.contains(svc),
                    *i == owner.0,
                    "{svc} owned by {owner:?}, physically on n{i}: {}",
                    n.physical.contains(svc)
                );
            }
        }
    }
}

fn run_seed(seed: u64) {
    let n = if seed.is_multiple_of(2) { 5 } else { 3 };
    let mut sim = Sim::new(seed, n);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.run_until(240_000);
        sim.settle_and_check();
    }));
    if let Err(e) = result {
        for l in &sim.trace {
            eprintln!("{l}");
        }
        eprintln!("rgmanager sim: seed {seed} FAILED (replay: RG_SIM_SEED={seed})");
        std::panic::resume_unwind(e);
    }
}

#[test]
fn seeded_cluster_simulation() {
    if let Ok(s) = std::env::var("RG_SIM_SEED") {
        let seed: u64 = s.parse().expect("RG_SIM_SEED");
        println!("rgmanager sim: seed {seed}");
        return run_seed(seed);
    }
    let seeds: u64 = std::env::var("RG_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 1..=seeds {
        println!("rgmanager sim: seed {seed}");
        run_seed(seed);
    }
    println!("rgmanager sim: {seeds} seeds passed");
}
