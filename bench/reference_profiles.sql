-- The baseline of bench/pipeline.py: the profile fields of DESIGN.md "Mart contract" computed by
-- hand in one DuckDB script straight from the lake, with no dbt, no incremental bookkeeping, no
-- tests and no intermediate tables beyond what the computation needs. Same rules as the models
-- (first-ingested event wins, CDC order, stitching, erasure, canonical ids, USD, affinity,
-- associations and recommendations), so the comparison is like for like.
-- Placeholders filled by bench/pipeline.py: {lake}, {seeds}, {as_of}.

create or replace temp table aliases as
select upper(trim(alias)) as alias, product_id
from read_csv('{seeds}/product_id_aliases.csv', header = true, columns = {'alias': 'varchar', 'product_id': 'varchar'});

create or replace temp table rates as
select * from read_csv('{seeds}/currency_rates.csv', header = true,
                       columns = {'currency': 'varchar', 'rate_to_usd': 'decimal(18, 6)'});

create or replace temp table signals as
select * from read_csv('{seeds}/event_signals.csv', header = true,
                       columns = {'event_type': 'varchar', 'signal_category': 'varchar', 'weight': 'double'});

create or replace temp macro clean(x) as nullif(regexp_replace(x, '^\s+|\s+$', '', 'g'), '');

create or replace temp macro ts(x) as
    case
        when regexp_full_match(clean(x), '-?[0-9]{1,16}') then epoch_ms(cast(clean(x) as bigint))
        else try_cast(regexp_replace(regexp_replace(clean(x), '[Zz]$', ''), 'T', ' ') as timestamptz) at time zone 'UTC'
    end;

create or replace temp table events as
select
    e.event_id,
    clean(e.customer_id) as customer_id,
    clean(e.anonymous_id) as anonymous_id,
    coalesce(a.product_id, upper(clean(e.product_id))) as product_id,
    lower(clean(e.event_type)) as event_type,
    ts(e.occurred_at) as occurred_at
from read_parquet('{lake}/events/*/*.parquet', hive_partitioning = true, union_by_name = true) as e
left join aliases as a on upper(clean(e.product_id)) = a.alias
qualify row_number() over (partition by clean(e.event_id) order by e._ingested_at, e._batch_id, e._source_line) = 1;

create or replace temp table customers as
select
    clean(customer_id) as customer_id, op = 'd' as is_deleted, lower(clean(email)) as email,
    clean(first_name) as first_name, clean(last_name) as last_name, upper(clean(country)) as country,
    clean(locale) as locale, clean(timezone) as timezone,
    case lower(clean(marketing_consent)) when 'true' then true when 'false' then false end as marketing_consent
from read_parquet('{lake}/customers/*/*.parquet', hive_partitioning = true, union_by_name = true)
qualify row_number() over (
    partition by clean(customer_id) order by ts_ms desc, source_lsn desc nulls last, _ingested_at desc, _batch_id desc, _source_line desc
) = 1;

create or replace temp table orders as
select
    clean(order_id) as order_id, clean(customer_id) as customer_id, lower(clean(status)) as status,
    upper(clean(currency)) as currency, try_cast(clean(total_amount) as decimal(18, 6)) as total_amount,
    ts(created_at) as created_at
from read_parquet('{lake}/orders/*/*.parquet', hive_partitioning = true, union_by_name = true)
where true
qualify row_number() over (
    partition by clean(order_id) order by ts_ms desc, source_lsn desc nulls last, _ingested_at desc, _batch_id desc, _source_line desc
) = 1 and op != 'd';

create or replace temp table items as
select clean(i.order_id) as order_id, coalesce(a.product_id, upper(clean(i.product_id))) as product_id
from read_parquet('{lake}/order_items/*/*.parquet', hive_partitioning = true, union_by_name = true) as i
left join aliases as a on upper(clean(i.product_id)) = a.alias
qualify row_number() over (
    partition by clean(i.order_item_id) order by i.ts_ms desc, i.source_lsn desc nulls last, i._ingested_at desc, i._batch_id desc, i._source_line desc
) = 1 and i.op != 'd';

create or replace temp table catalog as
select
    coalesce(a.product_id, upper(clean(p.product_id))) as product_id, clean(p.category) as category,
    case lower(clean(p.in_stock)) when 'true' then true else false end as in_stock
from read_parquet('{lake}/products/*/*.parquet', hive_partitioning = true, union_by_name = true) as p
left join aliases as a on upper(clean(p.product_id)) = a.alias
qualify row_number() over (
    partition by coalesce(a.product_id, upper(clean(p.product_id))) order by p._ingested_at desc, p._batch_id desc, p._source_line desc
) = 1;

create or replace temp table links as
select anonymous_id, customer_id from events
where anonymous_id is not null and customer_id is not null
qualify row_number() over (partition by anonymous_id order by occurred_at, event_id) = 1;

create or replace temp table erased as select customer_id from customers where is_deleted;

create or replace temp table attributed as
select e.event_id, coalesce(e.customer_id, l.customer_id) as customer_id, e.product_id, e.event_type, e.occurred_at
from events as e left join links as l on e.anonymous_id = l.anonymous_id
where coalesce(e.customer_id, l.customer_id) is not null
    and coalesce(e.customer_id, l.customer_id) not in (select customer_id from erased);

create or replace temp table counted as
select o.*, r.rate_to_usd from orders as o left join rates as r on o.currency = r.currency
where o.status not in ('cancelled', 'refunded') and o.customer_id is not null;

create or replace temp table interactions as
select customer_id, product_id, max(weight) as strength, bool_or(is_ordered) as is_ordered,
       max(interacted_at) as last_at
from (
    select a.customer_id, a.product_id, s.weight, false as is_ordered, a.occurred_at as interacted_at
    from attributed as a join signals as s on a.event_type = s.event_type
    where a.product_id is not null and s.signal_category in ('browse', 'intent', 'conversion') and s.weight > 0
    union all
    select c.customer_id, i.product_id, (select weight from signals where event_type = 'purchase'), true, c.created_at
    from items as i join counted as c on i.order_id = c.order_id
    where i.product_id is not null and c.customer_id not in (select customer_id from erased)
)
group by customer_id, product_id;

create or replace temp table top20 as
select * from interactions
qualify row_number() over (partition by customer_id order by strength desc, last_at desc, product_id) <= 20;

create or replace temp table associations as
with pairs as (
    select l.product_id as a, r.product_id as b, sum(l.strength * r.strength) as co
    from top20 as l join top20 as r on l.customer_id = r.customer_id and l.product_id != r.product_id
    group by l.product_id, r.product_id
), norms as (select product_id, sqrt(sum(strength * strength)) as n from top20 group by all)
select a, b, round(co / (na.n * nb.n), 9) as score
from pairs join norms as na on pairs.a = na.product_id join norms as nb on pairs.b = nb.product_id
qualify row_number() over (partition by a order by round(co / (na.n * nb.n), 9) desc, b) <= 20;

create or replace temp table popularity as
select product_id, sum(strength) as popularity from interactions group by all;

create or replace temp table affinity as
with w as (
    select a.customer_id, c.category, s.weight, date_diff('millisecond', timestamp '1970-01-01', a.occurred_at) / 86400000.0 as d
    from attributed as a join signals as s on a.event_type = s.event_type join catalog as c on a.product_id = c.product_id
    where c.category is not null and s.weight > 0
), r as (select *, max(d) over (partition by customer_id) as dmax from w)
select customer_id, category,
       round(max(dmax) / 30.0 + log2(cast(sum(cast(weight * pow(2.0, (d - dmax) / 30.0) as decimal(38, 18))) as double)), 9) as score
from r group by all;

create or replace temp table ranked_affinity as
select *, row_number() over (partition by customer_id order by score desc, category) as k from affinity;

create or replace temp table recommendations as
with instock as (select * from catalog where in_stock),
evidence as (
    select i.customer_id, a.b as product_id, cast(i.strength as decimal(9, 2)) * cast(a.score as decimal(18, 9)) as ev
    from top20 as i join associations as a on i.product_id = a.a
    union all
    select customer_id, product_id, cast(strength as decimal(9, 2)) from top20
),
scored as (
    select e.customer_id, e.product_id, sum(e.ev) as s from evidence as e
    where e.product_id in (select product_id from instock)
        and not exists (select 1 from interactions as i where i.is_ordered and i.customer_id = e.customer_id and i.product_id = e.product_id)
    group by e.customer_id, e.product_id
    qualify row_number() over (partition by e.customer_id order by sum(e.ev) desc, e.product_id) <= 10
),
fallback as (
    select f.customer_id, p.product_id, f.k, pop.popularity
    from ranked_affinity as f join instock as p on f.category = p.category join popularity as pop on p.product_id = pop.product_id
    where f.k <= 3
        and not exists (select 1 from interactions as i where i.is_ordered and i.customer_id = f.customer_id and i.product_id = p.product_id)
        and not exists (select 1 from scored as s where s.customer_id = f.customer_id and s.product_id = p.product_id)
)
select customer_id, product_id, row_number() over (partition by customer_id order by o, k, s desc, product_id) as rank
from (
    select customer_id, product_id, 1 as o, 0 as k, cast(s as double) as s from scored
    union all
    select customer_id, product_id, 2, k, popularity from fallback
)
qualify rank <= 10;

create or replace table reference_profiles as
with people as (
    select customer_id from customers where not is_deleted
    union select customer_id from attributed
    union select customer_id from orders where customer_id is not null
    except select customer_id from erased
),
seen as (select customer_id, min(occurred_at) as first_seen_at, max(occurred_at) as last_seen_at from attributed group by all),
stats as (
    select customer_id, count(*) as orders_count, sum(total_amount * rate_to_usd) as ltv, max(created_at) as last_order_at
    from counted group by all
),
latest as (select customer_id, max(created_at) as latest_at from orders group by all),
views as (
    select customer_id, list(product_id order by v desc, product_id)[1:5] as recently_viewed
    from (select customer_id, product_id, max(occurred_at) as v from attributed
          where event_type = 'product_view' and product_id is not null group by all)
    group by all
),
carts as (
    select c.customer_id, list(c.product_id order by c.added desc, c.product_id) as cart
    from (
        select customer_id, product_id,
               max(occurred_at) filter (where event_type = 'add_to_cart') as added,
               max(occurred_at) filter (where event_type = 'remove_from_cart') as removed
        from attributed where event_type in ('add_to_cart', 'remove_from_cart') and product_id is not null group by all
    ) as c left join latest as l on c.customer_id = l.customer_id
    where c.added is not null and (l.latest_at is null or c.added > l.latest_at) and (c.removed is null or c.removed < c.added)
    group by all
),
cats as (select customer_id, list(category order by k) as top_categories from ranked_affinity where k <= 3 group by all),
recs as (select customer_id, list(product_id order by rank) as recommendations from recommendations group by all)
select
    p.customer_id, c.email, c.first_name, c.last_name, c.country, c.locale, c.timezone, c.marketing_consent,
    seen.first_seen_at, seen.last_seen_at,
    cast(coalesce(stats.orders_count, 0) as integer) as orders_count,
    cast(round(coalesce(stats.ltv, 0), 2) as decimal(18, 2)) as lifetime_value,
    stats.last_order_at,
    case
        when stats.last_order_at is null then 'prospect'
        when stats.last_order_at >= timestamp '{as_of}' - interval 2160 hour then 'active'
        when stats.last_order_at >= timestamp '{as_of}' - interval 4320 hour then 'at_risk'
        else 'lapsed'
    end as lifecycle_stage,
    coalesce(views.recently_viewed, []) as recently_viewed,
    coalesce(carts.cart, []) as cart,
    coalesce(cats.top_categories, []) as top_categories,
    coalesce(recs.recommendations, []) as recommendations
from people as p
left join customers as c on p.customer_id = c.customer_id
left join seen on p.customer_id = seen.customer_id
left join stats on p.customer_id = stats.customer_id
left join views on p.customer_id = views.customer_id
left join carts on p.customer_id = carts.customer_id
left join cats on p.customer_id = cats.customer_id
left join recs on p.customer_id = recs.customer_id;
