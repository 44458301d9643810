"""governance — riders as the city's "mobile probes" (移动探头): reports routed to departments
with deadlines and escalation, mediation cases (调处), and the participation pledge (承诺倡议)."""
