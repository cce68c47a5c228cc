"""The scenario behind `lictor demo`: governance shown with real servers and processes.

`plane` starts a real `lictor serve` on a temporary data directory and sets
it up as an admin would (policies, entities, three runtimes in three
regions); `work` starts governed work as real `lictor run` processes;
`proxy` is the loopback link whose cut makes a runtime go silent;
`scenario` runs the steps, each returning a `Row` that says which promise
it shows and whether it held, and ends with an audit of the whole log.
"""
