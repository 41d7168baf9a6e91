-- The credential check, in Envoy: the sha256 of the request's bearer value looked up among the
-- hashes its virtual host carries (metadata under this filter's name: hash -> principal). What it lets
-- through goes on without the credential and with its principal; what it refuses is marked with
-- FAILURE_HEADER (MISSING or REFUSED) and routed again, to the virtual host's refusal routes (401,
-- after the failure's own rate limit). The translator defines the upper-case names before this file.

-- Per worker: service -> {version, principals, count}. The per-route context names the table's
-- version, so a table is converted to Lua once per version, not per request. Tables of services gone
-- stay until the worker holds MAX_CACHED_CREDENTIALS entries; then all go, and the live ones are
-- converted again as their requests come.
local tables, cached = {}, 0

local function principals_of(handle, context, service)
  local version = context:get(VERSION_KEY)
  local known = tables[service]
  if known == nil or known.version ~= version then
    local principals, count = {}, 0
    for digest, principal in pairs(handle:virtualHost():metadata()) do
      principals[digest] = principal
      count = count + 1
    end
    if known ~= nil then
      cached = cached - known.count
    end
    if cached + count > MAX_CACHED_CREDENTIALS then
      tables, cached = {}, 0
    end
    known = { version = version, principals = principals, count = count }
    tables[service] = known
    cached = cached + count
  end
  return known.principals
end

-- `Bearer <value>` (the scheme in any case), else nil.
local function bearer_value(authorization)
  if authorization == nil then
    return nil
  end
  local space = string.find(authorization, " ", 1, true)
  if space == nil or string.lower(string.sub(authorization, 1, space - 1)) ~= "bearer" then
    return nil
  end
  local value = string.match(string.sub(authorization, space + 1), "^%s*(.-)%s*$")
  if value == "" then
    return nil
  end
  return value
end

local function refuse(handle, headers, reason)
  headers:replace(FAILURE_HEADER, reason)
  handle:clearRouteCache()
end

local function check(handle)
  local context = handle:filterContext()
  local service = context:get(SERVICE_KEY)
  if service == nil then
    -- No service here (Envoy answers 404): nothing to open.
    return
  end
  local headers = handle:headers()
  local value = bearer_value(headers:get("authorization"))
  if value == nil then
    return refuse(handle, headers, MISSING)
  end
  local principal = nil
  -- No credential is this long; a longer value is not worth hashing.
  if #value <= MAX_CREDENTIAL_BYTES then
    principal = principals_of(handle, context, service)[sha256_hex(value)]
  end
  if principal == nil then
    return refuse(handle, headers, REFUSED)
  end
  headers:remove("authorization")
  headers:replace(PRINCIPAL_HEADER, principal)
end

-- Envoy lets a request through a script that fails: this one refuses it instead.
function envoy_on_request(handle)
  local ok, failure = pcall(check, handle)
  if not ok then
    handle:logErr("auth check failed, request refused: " .. tostring(failure))
    refuse(handle, handle:headers(), REFUSED)
  end
end
