-- POST /api/bookings/ (one ticket) as a pool of attendees, on a random event of a range
-- of consecutive ids (one event for the hot shape).
-- wrk ... -s booking.lua URL -- TOKENS_FILE EV_LO EV_HI TT_OFFSET
-- (ticket type id = event id + TT_OFFSET; TOKENS_FILE: one access token per line)
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "statuses.lua")

local headers = {}
local ev_lo, ev_hi, tt_offset

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         table.insert(headers, {
            ["Authorization"] = "Bearer " .. line,
            ["Content-Type"] = "application/json",
         })
      end
   end
   ev_lo, ev_hi, tt_offset = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
   math.randomseed(id * 7919 + os.time())
end

function request()
   local event = math.random(ev_lo, ev_hi)
   local body = '{"event_id":' .. event .. ',"items":[{"ticket_type_id":'
      .. (event + tt_offset) .. ',"quantity":1}]}'
   return wrk.format("POST", "/api/bookings/", headers[math.random(#headers)], body)
end
