"""The investigation and planning graph (LangGraph).

    triage → investigate (tool loop) → plan → policy_check → rehearse → await_approval (interrupt)
           → execute → verify → next action | resolve | escalate

- `state`: the checkpointed state, plain JSON, every field documented. `context`: the ports and planners a
  run gets (built by the caller; `gpuops.agent_wiring.context_from_container` builds it from the wiring).
- The core (store, lifecycle, policy, execution) is reached only through `ports`: incidents (snapshot, moves,
  timeline and audit, LLM usage), evidence (a node's history), policy (scope), runbooks and actions. The
  execution side moves the incident through executing and verifying; the graph moves it to investigating,
  awaiting_approval and its end. The agent raises its own `errors`; the core's entry points translate them.
- A plan is an ordered list of actions (cordon, then drain, then reboot). Each is proposed on its own
  through the execution service (validation, dry run, policy verdict, stored Action with an idempotency key),
  rehearsed, approved and executed before the next one is proposed, so every step meets policy with the
  fleet as it is after the previous one.
- The checkpointer lives in the store's database (`checkpoint`), so any process resumes an incident's thread
  (`runner.resume`, `gpuops approve`); `locks` serialises runs of one incident across processes. The wait
  node only reads, because LangGraph re-runs it on resume.
- Two planners behind one interface (`planning`): `rules` (deterministic table per fault kind, the default
  and the fallback) and `llm` (Chat Completions, tools generated from the runbook schemas). Whatever a planner
  proposes passes `validation` (runbook exists, parameters validate, targets inside the incident) in code.
- Investigation tools (`tools`) return typed results; what reaches the LLM is bounded and fenced as data
  (`fencing`).
"""
