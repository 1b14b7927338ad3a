"""Citizen requests: complaints, installment and bill-correction requests (pure core).

States and transitions with their history, turnaround deadlines in working days,
escalation, installment plans in integer minor units, and the ports the web
service implements (the store, the payment facts, the code sender). No sockets,
no clock: time comes in as ``now``.
"""
