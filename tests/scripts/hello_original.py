from geode_mpi import Geode, Message

geode = Geode()

class MyMessage(Message):
    def __init__(self, data):
        super().__init__(data)

message = MyMessage("Hello, World!")
geode.send(message, "node1", "node2")
received_message = geode.receive("node2")
print(received_message.data)
