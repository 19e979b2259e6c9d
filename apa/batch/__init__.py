"""The batch job's core, without Ray: stage functions over rows, crash-safe committed parts,
settings, the job summary and the demo corpus. ``ray_jobs.batch_score`` wires them together."""
