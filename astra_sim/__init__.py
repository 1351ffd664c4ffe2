"""Simulators, expert demonstrations and closed-loop evaluation for Astra (no ROS).

``astra_sim.env``       the environment protocol + registry every simulator bridge implements
``astra_sim.tabletop``  the built-in VIMA-style SE(2) pick-and-place tabletop (OpenCV rendering)
``astra_sim.demos``     record scripted-expert demonstrations into an astra_core dataset
``astra_sim.evaluate``  closed-loop evaluation of a checkpoint with the streaming runtime
``astra_sim.demo``      the main job: demos -> train the tiny preset -> evaluate -> JSON summary
"""
