-- Shared helpers for the hammerstack wrk scripts (loaded by each script with
-- dofile from the script's own folder; not a script to pass to wrk itself).
--
--   * options: "key=value" words after wrk's "--", else the environment
--     variable HSWRK_<KEY> (upper case), else the script's default;
--   * a deterministic random state per wrk thread (seed + thread number);
--   * a Zipf(s) sampler over 1..N from a CDF table built once in init();
--   * status counting in response() and a summary in done(): a readable
--     block and one machine-readable line "HSJSON {...}" that other tools
--     (bench-server, the walkthrough, the tests) parse.
--
-- wrk runs setup() and done() in one Lua state and init()/request()/
-- response() in one state per thread; counters travel from the thread
-- states to done() through thread:get().

local M = {}

local threads = {}   -- main state only: the thread handles from setup()
local nthreads = 0

-- Thread-local counters (globals so that thread:get() can read them).
hs_thread_id = hs_thread_id or 0
hs_s2xx, hs_s3xx, hs_s4xx, hs_s5xx, hs_sother = 0, 0, 0, 0, 0
hs_kinds = {}        -- kind name -> requests generated in this thread

M.opts = {}

function M.json_str(s)
	return '"' .. string.gsub(tostring(s), '[%c"\\]', function(c)
		return string.format("\\u%04x", string.byte(c))
	end) .. '"'
end

-- Parses init()'s args ("key=value" words; the URL and others are ignored)
-- over the defaults; the environment (HSWRK_KEY) sits between the two.
function M.options(args, defaults)
	local o = {}
	-- Every script takes count=0|1: with count=0 response() is not
	-- installed, so wrk skips parsing headers and bodies (the fastest load
	-- generator, for peaks), and non-2xx falls back to wrk's own count of
	-- statuses >= 400.
	if defaults.count == nil then defaults.count = 1 end
	M.given = {}
	for k, v in pairs(defaults) do
		local env = os.getenv("HSWRK_" .. string.upper(k))
		if env ~= nil and env ~= "" then
			v = env
			M.given[k] = true
		end
		o[k] = v
	end
	for _, a in pairs(args or {}) do
		local k, v = string.match(a, "^%-*([%w_]+)=(.*)$")
		if k then
			if defaults[k] == nil then
				error("unknown option '" .. k .. "' (known: " ..
				      M.keys(defaults) .. ")")
			end
			o[k] = v
			M.given[k] = true
		end
	end
	-- Numbers stay numbers when the default is one.
	for k, v in pairs(o) do
		if type(defaults[k]) == "number" then
			local n = tonumber(v)
			if n == nil then
				error("option " .. k .. "=" .. tostring(v) ..
				      " is not a number")
			end
			o[k] = n
		end
	end
	M.opts = o
	hs_counting = o.count ~= 0
	if not hs_counting then response = nil end
	-- done() runs in another Lua state: hand it the options as JSON text.
	hs_opts_json = M.json_fields(o)
	return o
end

-- Encodes a flat table of numbers and strings as JSON object members
-- (without the braces), keys sorted.
function M.json_fields(t)
	local ks = {}
	for k in pairs(t) do ks[#ks + 1] = k end
	table.sort(ks)
	local out = {}
	for _, k in ipairs(ks) do
		local v = t[k]
		if type(v) == "number" then
			out[#out + 1] = string.format("%s:%.10g", M.json_str(k), v)
		else
			out[#out + 1] = string.format("%s:%s", M.json_str(k), M.json_str(v))
		end
	end
	return table.concat(out, ",")
end

function M.keys(t)
	local ks = {}
	for k in pairs(t) do ks[#ks + 1] = k end
	table.sort(ks)
	return table.concat(ks, ", ")
end

-- One reproducible random stream per thread: same seed and thread count,
-- same request sequence.
function M.seed_random(seed)
	math.randomseed(seed + 1000003 * (hs_thread_id + 1))
	-- LuaJIT's first draws after seeding are fine, but skip a few anyway so
	-- that nearby seeds do not start alike.
	for _ = 1, 8 do math.random() end
end

local function gcd(a, b)
	while b ~= 0 do a, b = b, a % b end
	return a
end

-- A Zipf(s) sampler over 1..n.  Rank r has weight 1/r^s; the CDF table is
-- built once (n doubles) and sampled by binary search.  With scatter, rank r
-- maps to id ((r-1)*step mod n)+1 with step coprime to n, so the hot ids
-- are spread over the id range (and so over categories and B-tree pages)
-- instead of being 1, 2, 3...
function M.zipf(n, s, scatter)
	n = math.max(1, math.floor(n))
	local cdf = {}
	local sum = 0
	for r = 1, n do
		sum = sum + 1 / (r ^ s)
		cdf[r] = sum
	end
	for r = 1, n do cdf[r] = cdf[r] / sum end
	cdf[n] = 1.0
	local step = 1
	if scatter and n > 2 then
		step = 7919 % n
		if step == 0 then step = 1 end
		while gcd(step, n) ~= 1 do step = step + 1 end
	end
	local z = { n = n, cdf = cdf, step = step }
	function z.rank()
		local u = math.random()
		local lo, hi = 1, n
		while lo < hi do
			local mid = math.floor((lo + hi) / 2)
			if cdf[mid] < u then lo = mid + 1 else hi = mid end
		end
		return lo
	end
	function z.id()
		local r = z.rank()
		return ((r - 1) * step) % n + 1
	end
	return z
end

-- Returns a function id -> request string for "GET <prefix><id><suffix>",
-- memoised so that a hot id costs a table lookup instead of a format.
function M.get_memo(prefix, suffix)
	local memo = {}
	return function(id)
		local r = memo[id]
		if r == nil then
			r = wrk.format("GET", prefix .. id .. (suffix or ""))
			memo[id] = r
		end
		return r
	end
end

function M.count_kind(kind)
	hs_kinds[kind] = (hs_kinds[kind] or 0) + 1
end

-- Installed as the global response(): counts status classes.
function M.response(status, headers, body)
	if status >= 200 and status < 300 then
		hs_s2xx = hs_s2xx + 1
	elseif status >= 500 and status < 600 then
		hs_s5xx = hs_s5xx + 1
	elseif status >= 400 then
		hs_s4xx = hs_s4xx + 1
	elseif status >= 300 then
		hs_s3xx = hs_s3xx + 1
	else
		hs_sother = hs_sother + 1
	end
end

-- Installed as the global setup(): numbers the threads (before their init).
function M.setup(thread)
	thread:set("hs_thread_id", nthreads)
	nthreads = nthreads + 1
	threads[#threads + 1] = thread
end

-- The id ranges of the database behind the URL, from hs-server's /catalog
-- ({"products": N, "categories": N}; through hs-balancer, from one of its
-- servers).  Asked once, in the main state, with curl: wrk's Lua has
-- no sockets.  false when the server cannot say (not hs-server, no curl).
local learned = nil

local function learn_counts()
	if learned ~= nil then return learned end
	learned = false
	local host = wrk.host or ""
	if string.find(host, ":", 1, true) then host = "[" .. host .. "]" end
	local url = string.format("%s://%s:%s/catalog", wrk.scheme or "http",
				  host, wrk.port or
				  (wrk.scheme == "https" and "443" or "80"))
	-- Only a URL made of plain characters goes to the shell.
	if not string.match(url, "^[%w%.:/%[%]_-]+$") then return learned end
	local f = io.popen("curl -fsS -m 5 '" .. url .. "' 2>/dev/null")
	if f == nil then return learned end
	local body = f:read("*a") or ""
	f:close()
	local p, c = string.match(body,
		'"products"%s*:%s*(%d+)%s*,%s*"categories"%s*:%s*(%d+)')
	p, c = tonumber(p), tonumber(c)
	if p and c and p > 0 and c > 0 then
		learned = { products = p, categories = c, url = url }
	end
	return learned
end

-- setup() for the scripts that draw product and category ids: M.setup,
-- plus the server's id ranges handed to each thread, where init() uses
-- them unless products= or categories= is given.
function M.setup_counts(thread)
	M.setup(thread)
	local n = learn_counts()
	if n then
		thread:set("hs_products", n.products)
		thread:set("hs_categories", n.categories)
	end
end

-- defaults with products and categories from the server when setup_counts
-- learnt them.  Call after M.options() to warn when they are guessed.
function M.counts_defaults(defaults)
	if hs_products then
		defaults.products = hs_products
		defaults.categories = hs_categories
	end
	return defaults
end

function M.counts_check(name, o)
	if hs_products or hs_thread_id ~= 0 then return end
	if M.given.products and M.given.categories then return end
	io.stderr:write(string.format(
		"%s: the server did not say how many products and categories it " ..
		"has (GET /catalog, with curl); assuming products=%d categories=%d " ..
		"(scale 1).  Pass products=N categories=N after -- if that is " ..
		"wrong.\n", name, o.products, o.categories))
end


-- Installed as the global done(): prints the summary and the HSJSON line.
-- name is the script's name; extra (optional) is a table of further
-- numeric or string fields for the JSON line.
function M.done(name, extra)
	return function(summary, latency, requests)
		local c = { s2xx = 0, s3xx = 0, s4xx = 0, s5xx = 0, sother = 0 }
		local kinds = {}
		for _, t in ipairs(threads) do
			c.s2xx = c.s2xx + (t:get("hs_s2xx") or 0)
			c.s3xx = c.s3xx + (t:get("hs_s3xx") or 0)
			c.s4xx = c.s4xx + (t:get("hs_s4xx") or 0)
			c.s5xx = c.s5xx + (t:get("hs_s5xx") or 0)
			c.sother = c.sother + (t:get("hs_sother") or 0)
			local tk = t:get("hs_kinds") or {}
			for k, v in pairs(tk) do kinds[k] = (kinds[k] or 0) + v end
		end
		local e = summary.errors
		local sockerr = e.connect + e.read + e.write + e.timeout
		local counting = not threads[1] or threads[1]:get("hs_counting")
		local counted = c.s2xx + c.s3xx + c.s4xx + c.s5xx + c.sother
		local non2xx = counted - c.s2xx
		if not counting then
			-- count=0: only wrk's tally of statuses >= 400 is known;
			-- the per-class counts are reported as -1 (unknown).
			non2xx = e.status
			c = { s2xx = -1, s3xx = -1, s4xx = -1, s5xx = -1, sother = -1 }
		end
		local secs = summary.duration / 1e6
		local rps = secs > 0 and summary.requests / secs or 0
		local p50 = latency:percentile(50)
		local p90 = latency:percentile(90)
		local p99 = latency:percentile(99)

		io.write(string.format("---- %s summary ----\n", name))
		io.write(string.format(
			"requests %d in %.2fs = %.0f req/s; latency p50 %.0fus p90 %.0fus p99 %.0fus max %.0fus\n",
			summary.requests, secs, rps, p50, p90, p99, latency.max))
		if counting then
			io.write(string.format(
				"status 2xx %d, 3xx %d, 4xx %d, 5xx %d, other %d; non-2xx %d; ",
				c.s2xx, c.s3xx, c.s4xx, c.s5xx, c.sother, non2xx))
		else
			io.write(string.format(
				"status not counted (count=0); status >= 400: %d; ",
				non2xx))
		end
		io.write(string.format(
			"socket errors %d (connect %d read %d write %d timeout %d)\n",
			sockerr, e.connect, e.read, e.write, e.timeout))
		local kl = {}
		for k, v in pairs(kinds) do kl[#kl + 1] = k .. " " .. v end
		table.sort(kl)
		if #kl > 0 then
			io.write("requests sent by kind: " .. table.concat(kl, ", ") .. "\n")
		end

		local f = {
			string.format('"script":%s', M.json_str(name)),
			string.format('"threads":%d', nthreads),
			string.format('"requests":%d', summary.requests),
			string.format('"duration_s":%.3f', secs),
			string.format('"rps":%.1f', rps),
			string.format('"p50_us":%d', p50),
			string.format('"p90_us":%d', p90),
			string.format('"p99_us":%d', p99),
			string.format('"max_us":%d', latency.max),
			string.format('"mean_us":%.1f', latency.mean),
			string.format('"bytes":%d', summary.bytes),
			string.format('"errors":%d', sockerr),
			string.format('"err_connect":%d', e.connect),
			string.format('"err_read":%d', e.read),
			string.format('"err_write":%d', e.write),
			string.format('"err_timeout":%d', e.timeout),
			string.format('"non2xx":%d', non2xx),
			string.format('"status_2xx":%d', c.s2xx),
			string.format('"status_3xx":%d', c.s3xx),
			string.format('"status_4xx":%d', c.s4xx),
			string.format('"status_5xx":%d', c.s5xx),
		}
		local kj = {}
		for k, v in pairs(kinds) do
			kj[#kj + 1] = string.format("%s:%d", M.json_str(k), v)
		end
		table.sort(kj)
		f[#f + 1] = '"kinds":{' .. table.concat(kj, ",") .. "}"
		f[#f + 1] = string.format('"status_counted":%s', tostring(counting))
		local oj = threads[1] and threads[1]:get("hs_opts_json") or ""
		f[#f + 1] = '"options":{' .. oj .. "}"
		local ej = M.json_fields(extra or {})
		if ej ~= "" then f[#f + 1] = ej end
		io.write("HSJSON {" .. table.concat(f, ",") .. "}\n")
	end
end

return M
