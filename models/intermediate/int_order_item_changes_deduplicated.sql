{{ config(unique_key=['order_item_id', 'change_op', 'change_ts_ms', 'change_row_json']) }}

{{ cdc_changes_deduplicated(
    staging_model='stg_shop__order_items',
    lake_table='order_items',
    key='order_item_id',
    columns=['order_id', 'product_id', 'quantity', 'unit_price'],
) }}
