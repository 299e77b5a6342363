"""From a policy-checked plan to a verified change: approvals bound to the plan's hash, exactly-once
execution with a claim in the store, verification, rollback, and the audit of every step."""
