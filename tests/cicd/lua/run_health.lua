-- Runs an Argo CD health script the way Argo CD does: the object in the global `obj`, the
-- script's returned table read for status and message.
-- Usage: lua5.1 run_health.lua HEALTH.lua OBJECT.lua   (OBJECT.lua returns the object table)
local health_path, object_path = arg[1], arg[2]
obj = assert(loadfile(object_path))()
local hs = assert(loadfile(health_path))()
assert(type(hs) == "table", "the health script returned " .. type(hs) .. ", not a table")
io.write(tostring(hs.status), "\n", tostring(hs.message), "\n")
