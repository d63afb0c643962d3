{{ config(unique_key='order_item_id') }}

{#- product_id is canonicalized here through the alias seed: staging has no joins -#}
{{ cdc_current_state(
    changes_model='int_order_item_changes_deduplicated',
    key='order_item_id',
    columns=['order_id', 'product_id', 'quantity', 'unit_price'],
    tracked_columns=['order_id'],
) }}
