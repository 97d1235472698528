-- Makes jobs_add.lua, which follows, skip its own main part (jobs_flow_add.lua has one).
FLOW_ADD = true
