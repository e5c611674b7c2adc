-- POST /api/holds/ alone (one ticket), each request by an attendee not used before in the
-- run (one active hold per attendee and event), on a random event of a range of
-- consecutive ids (one event for the hot shape): the hold's cost beside booking.lua's.
-- wrk ... -s hold.lua URL -- TOKENS_FILE EV_LO EV_HI TT_OFFSET THREADS
-- (ticket type id = event id + TT_OFFSET; TOKENS_FILE: one access token per line, more
-- than the run makes holds; thread i of THREADS takes tokens i, i + THREADS, ...)
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "statuses.lua")

local tokens = {}
local ev_lo, ev_hi, tt_offset, step
local next_token

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         table.insert(tokens, line)
      end
   end
   ev_lo, ev_hi, tt_offset = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
   step = tonumber(args[5])
   next_token = id
   math.randomseed(id * 7919 + os.time())
end

function request()
   local token = tokens[(next_token - 1) % #tokens + 1]
   next_token = next_token + step
   local event = math.random(ev_lo, ev_hi)
   local body = '{"event_id":' .. event .. ',"items":[{"ticket_type_id":'
      .. (event + tt_offset) .. ',"quantity":1}]}'
   local headers = {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
   }
   return wrk.format("POST", "/api/holds/", headers, body)
end
