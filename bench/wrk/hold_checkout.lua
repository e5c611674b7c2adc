-- A booking in two requests, as a checkout page makes it: POST /api/holds/ (one ticket, a
-- random event of a range of consecutive ids), then POST /api/holds/{reference}/checkout/
-- with the reference the hold's answer gave, in turn on each connection.
-- wrk -t C -c C ... -s hold_checkout.lua URL -- TOKENS_FILE EV_LO EV_HI TT_OFFSET
-- (ticket type id = event id + TT_OFFSET; TOKENS_FILE: one access token per line)
-- One connection per thread (-t equal to -c): wrk calls response() and then request() in
-- the thread of the connection, so a thread's variables are its connection's state.
-- Thread i is attendee i (one active hold per attendee and event: give as many tokens as
-- connections). Answers are counted as "STATUS hold", "STATUS checkout", "STATUS find".
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "statuses.lua")

local headers
local ev_lo, ev_hi, tt_offset
local reference = nil -- the hold to check out next; nil: place a hold
local find = false -- a hold of ours is active already: look its reference up
local sent = nil -- what the request in flight is: "hold", "checkout" or "find"

function init(args)
   local tokens = {}
   for line in io.lines(args[1]) do
      if #line > 0 then
         table.insert(tokens, line)
      end
   end
   headers = {
      ["Authorization"] = "Bearer " .. tokens[(id - 1) % #tokens + 1],
      ["Content-Type"] = "application/json",
   }
   ev_lo, ev_hi, tt_offset = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
   math.randomseed(id * 7919 + os.time())
end

function request()
   if reference ~= nil then
      sent = "checkout"
      return wrk.format("POST", "/api/holds/" .. reference .. "/checkout/", headers, "{}")
   end
   if find then
      sent = "find"
      return wrk.format("GET", "/api/users/me/holds/?status=active&page_size=1", headers)
   end
   sent = "hold"
   local event = math.random(ev_lo, ev_hi)
   local body = '{"event_id":' .. event .. ',"items":[{"ticket_type_id":'
      .. (event + tt_offset) .. ',"quantity":1}]}'
   return wrk.format("POST", "/api/holds/", headers, body)
end

local function reference_in(body)
   return body:match('"hold_reference"%s*:%s*"([%x%-]+)"')
end

function response(status, headers, body)
   local key = status .. " " .. (sent or "?")
   statuses[key] = (statuses[key] or 0) + 1
   if sent == "hold" then
      if status == 201 then
         reference = reference_in(body)
      elseif status == 409 and body:find("hold_exists", 1, true) then
         -- A hold of an earlier run, or one whose answer was lost with its connection.
         find = true
      end
   elseif sent == "find" then
      find = false
      if status == 200 then
         reference = reference_in(body)
      end
   elseif sent == "checkout" then
      -- Done (201, or 200: checked out before), or it can never be (404, 409): a new
      -- hold next. Anything else (503 busy, 5xx, 429): the same checkout again.
      if status < 300 or status == 404 or status == 409 then
         reference = nil
      end
   end
end
