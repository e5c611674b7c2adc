-- GET one path (anonymous), counting responses by status.
-- wrk ... -s get.lua URL -- PATH
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "statuses.lua")

local request_bytes

function init(args)
   request_bytes = wrk.format("GET", args[1])
end

function request()
   return request_bytes
end
