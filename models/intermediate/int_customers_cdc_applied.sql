{{ config(unique_key='customer_id') }}

{{ cdc_current_state(
    changes_model='int_customer_changes_deduplicated',
    key='customer_id',
    columns=['email', 'first_name', 'last_name', 'country', 'locale', 'timezone',
             'marketing_consent', 'created_at', 'updated_at'],
) }}
