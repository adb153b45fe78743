-- update-mix.lua: the read mix plus a share of updates, all on
-- Zipf-distributed ids (so the hot products are also the ones updated, which
-- is what stresses cache invalidation).
--
--   wrk -t2 -c64 -d30s --latency -s loadtest/wrk/update-mix.lua \
--       http://127.0.0.1:8080 -- put=0.05 review=0.05
--
-- Per request: PUT /products/{id} with probability `put` (JSON body with a
-- new price_cents and stock), POST /products/{id}/reviews with probability
-- `review` (rating 1..5, a short body), else the read mix: GET
-- /categories/{id}/top with probability `top` among reads, GET
-- /products/{id} otherwise.  Options (key=value after "--" or HSWRK_KEY in the
-- environment; products and categories default to the server's counts, as
-- in read-mix.lua):
--   products=100000  categories=100  top=0.1  put=0.05  review=0.05
--   s=1.0  seed=1  scatter=1  count=1 (see read-mix.lua)
-- Prints a summary and one "HSJSON {...}" line at the end.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local hs = dofile(dir .. "hslib.lua")

local defaults = { products = 100000, categories = 100, top = 0.1, put = 0.05,
		   review = 0.05, s = 1.0, seed = 1, scatter = 1 }
local o, zp, zc
local get_product = hs.get_memo("/products/")
local get_top = hs.get_memo("/categories/", "/top")
local json_headers = { ["Content-Type"] = "application/json" }
local seq = 0

setup = hs.setup_counts
response = hs.response

function init(args)
	o = hs.options(args, hs.counts_defaults(defaults))
	hs.counts_check("update-mix", o)
	if o.put < 0 or o.review < 0 or o.put + o.review > 1 then
		error("put and review must be shares in 0..1 with put+review <= 1")
	end
	hs.seed_random(o.seed)
	zp = hs.zipf(o.products, o.s, o.scatter ~= 0)
	zc = hs.zipf(o.categories, o.s, o.scatter ~= 0)
end

function request()
	local u = math.random()
	if u < o.put then
		hs.count_kind("put")
		seq = seq + 1
		local body = string.format('{"price_cents":%d,"stock":%d}',
					   math.random(100, 99999), seq % 1000)
		return wrk.format("PUT", "/products/" .. zp.id(), json_headers, body)
	end
	if u < o.put + o.review then
		hs.count_kind("review")
		local body = string.format(
			'{"rating":%d,"body":"load test review %d-%d"}',
			math.random(1, 5), hs_thread_id, seq)
		seq = seq + 1
		return wrk.format("POST", "/products/" .. zp.id() .. "/reviews",
				  json_headers, body)
	end
	if math.random() < o.top then
		hs.count_kind("top")
		return get_top(zc.id())
	end
	hs.count_kind("product")
	return get_product(zp.id())
end

done = hs.done("update-mix")
