-- Argo CD health of an MLModel (serving.mlmodel.io), from the conditions the operator writes.
-- Argo CD runs this with the live object in `obj` and reads hs.status / hs.message.
-- Order matters: a status written for an older generation says nothing about the spec that
-- Git just changed, so it is never reported as Healthy or Degraded.
local hs = {}

local function condition(conditions, wanted)
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.reason ~= nil and c.reason ~= "" and c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil then
  local observed = status.observedGeneration
  if observed == nil or observed < generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
      .. " (status is for " .. tostring(observed or "none") .. ")"
    return hs
  end
end

local ready = condition(status.conditions, "Ready")
local progressing = condition(status.conditions, "Progressing")
local degraded = condition(status.conditions, "Degraded")

-- A condition left over from an older generation is ignored like a missing one.
local function current(c)
  if c ~= nil and generation ~= nil and c.observedGeneration ~= nil
      and c.observedGeneration < generation then
    return nil
  end
  return c
end
ready, progressing, degraded = current(ready), current(progressing), current(degraded)

-- A failed generation the operator rolled back still serves (Ready), from the last good spec:
-- Git's spec is not what runs, which a person must notice.
local rolledBack = current(condition(status.conditions, "RolledBack"))
if rolledBack ~= nil and rolledBack.status == "True" then
  hs.status = "Degraded"
  hs.message = "RolledBack: " .. describe(rolledBack, "a failed generation was rolled back")
  return hs
end

-- A canary that failed its analysis was scaled away; one still analysed is a rollout in progress.
local canary = current(condition(status.conditions, "Canary"))
if canary ~= nil and canary.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(canary, "CanaryFailed")
  return hs
end

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end

-- Scaled to zero on purpose (kubectl scale mlmodel --replicas=0): nothing to be healthy yet.
local spec = obj.spec or {}
if spec.autoscaling == nil and spec.replicas == 0 then
  hs.status = "Suspended"
  hs.message = "Scaled to zero replicas"
  return hs
end

if canary ~= nil and canary.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = describe(canary, "Analysing the canary")
  return hs
end

if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing, "Rolling out")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

if ready ~= nil and ready.status == "False" then
  -- Not ready and no longer progressing: the rollout stopped short, which needs a person.
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the Ready condition")
return hs
