-- Argo CD health of a Loom FeaturePipeline (loom.ml): the reading of kstatus (sigs.k8s.io/cli-utils, used by
-- Flux and kubectl-style waiters), from the conditions the operator writes (loom/builders/readiness.py):
--   status.observedGeneration behind metadata.generation: Progressing (the operator has not seen the spec);
--   Reconciling=True: Progressing; Stalled=True: Degraded; Ready=True: Healthy; otherwise Progressing.
--   Suspended (status.phase Suspended, from spec.suspend) is Suspended, where kstatus reads InProgress.
-- The three kinds' scripts differ only in that line and `suspendable`. Lua 5.1 (Argo CD's gopher-lua).
local suspendable = true  -- spec suspended: status.phase Suspended (Ready=False, no Reconciling)
local hs = {status = "Progressing", message = "Waiting for the Loom operator"}
if obj.status == nil then
  return hs
end
local function condition(kind)
  if obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end
local function says(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = "Waiting for the Loom operator to observe generation " .. generation .. " (observed " .. observed .. ")"
  return hs
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = says(reconciling, "Reconciling")
  return hs
end
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = says(stalled, "Stalled")
  return hs
end
local ready = condition("Ready")
if suspendable and obj.status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = says(ready, "Suspended")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = says(ready, "Ready")
  return hs
end
hs.message = says(ready, hs.message)
return hs
