{#- Normalization rules of DESIGN.md "Source contracts" and docs/architecture.md "Strings and absence". -#}

{% macro whitespace_class() -%}
    {#- RE2's \s (spaces, tabs, LF, CR, FF), spelled out: Java's \s also takes VT -#}
    {{ return('[ \\t\\n\\r\\f]') }}
{%- endmacro %}

{% macro clean_string(column) -%}
    {#- trimmed of whitespace on both ends (trim() removes spaces only); empty -> null -#}
    nullif({{ regexp_replace_all(column, '^' ~ whitespace_class() ~ '+|' ~ whitespace_class() ~ '+\\z', '') }}, '')
{%- endmacro %}

{% macro normalize_email(column) -%}
    lower({{ clean_string(column) }})
{%- endmacro %}

{% macro normalize_code(column) -%}
    {#- ISO country and currency codes -#}
    upper({{ clean_string(column) }})
{%- endmacro %}

{% macro normalize_product_id(column) -%}
    {#- the first two steps of the canonical id: trimmed, upper-cased (canonical_product_id adds the alias) -#}
    upper({{ clean_string(column) }})
{%- endmacro %}

{% macro canonical_product_id(product_id, alias_product_id) -%}
    {#- the alias seed's product_id when the normalized id is a legacy alias, else the id itself -#}
    coalesce({{ alias_product_id }}, {{ product_id }})
{%- endmacro %}

{% macro parse_boolean(column) -%}
    case lower({{ clean_string(column) }})
        when 'true' then true
        when 'false' then false
    end
{%- endmacro %}
